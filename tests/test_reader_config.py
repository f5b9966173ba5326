"""The ``reader:`` section: config validation, the run's served reader (registered for the run,
then unregistered), ``memgym eval --reader`` and one tiny ``memgym train`` run whose qa reward
comes from a served SmolLM2 reader."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import memgym.train
from memgym.cli import app
from memgym.config import TrainConfig, load_config
from memgym.config.run import ReaderConfig
from memgym.engine import Completion
from memgym.envs.answer_server import AnswerServer, lookup_reader, register_reader
from memgym.envs.answerers import Question, make_answerer
from memgym.errors import ConfigError
from memgym.memory import MemoryBank
from memgym.ops import Add
from memgym.reader import ServedReader, check_readers
from memgym.trajectory import load_trajectories, trajectories_from_frame

SERVED = {"answerer": "served:llm"}


class Echo:
    """An engine that answers every prompt with ``**Answer:** Max``; counts its calls."""

    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        return [Completion("**Answer:** Max") for _ in prompts]


@pytest.mark.parametrize("overrides", [
    {"env": {"answerer": "served:other"}},
    {"env": SERVED, "eval_env": {"answerer": "served:other"}},
    {"eval_env": {"split": "val", "answerer": "served:other"}},
])
def test_an_answerer_naming_another_reader_is_refused(overrides):
    with pytest.raises(ValidationError, match="served:other' names no reader of this run"):
        TrainConfig(reader={}, **overrides)
    with pytest.raises(ConfigError, match=r"reader\.name is 'llm'"):
        load_config(None, {**overrides, "reader": {"name": "llm"}})


def test_reader_is_refused_with_ray_rollouts_and_distributed_training():
    with pytest.raises(ValidationError, match=r"this process only; remove rollout\.ray_address"):
        TrainConfig(reader={}, rollout={"ray_address": "local"})
    with pytest.raises(ValidationError, match="Ray env workers run in others"):
        TrainConfig(reader={}, env=SERVED, rollout={"ray_address": "local"})
    with pytest.raises(ValidationError, match="Ray env workers run in others"):
        TrainConfig(env=SERVED, rollout={"ray_address": "local"})  # no reader either
    with pytest.raises(ValidationError, match="this process only"):
        TrainConfig(reader={}, env=SERVED, distributed={"strategy": "ddp"})


def test_reader_section_defaults_shorthand_and_step_threads():
    config = load_config(None, {"reader": {"model": "some/model", "metric": "em"},
                                "env": SERVED, "num_envs": 6})
    reader = config.reader
    assert (reader.name, reader.model.name_or_path, reader.engine, reader.metric) == \
        ("llm", "some/model", "hf", "em")
    assert (reader.max_new_tokens, reader.max_batch, reader.cache_size) == (48, 64, 4096)
    assert config.env_step_threads() == 6  # default: every env of a tick on its own thread
    assert TrainConfig(reader={"step_threads": 2}).env_step_threads() == 2
    assert TrainConfig().env_step_threads() == 1 and TrainConfig().reader is None
    with pytest.raises(ConfigError, match=r"reader\.base_url"):
        load_config(None, {"reader": {"engine": "openai"}})
    with pytest.raises(ConfigError, match=r"did you mean reader\.max_batch"):
        load_config(None, {"reader": {"max_batches": 2}})


def test_an_unregistered_reader_fails_before_anything_loads(tmp_path):
    config = TrainConfig(run_dir=str(tmp_path / "run"), env={"answerer": "served:nobody"})
    with pytest.raises(ConfigError, match="add a `reader:` section named 'nobody'"):
        memgym.train.train(config)
    assert not (tmp_path / "run").exists()
    check_readers(TrainConfig(reader={}, env=SERVED))  # the run registers its own


def test_served_reader_registers_counts_and_restores_what_it_replaced():
    previous = AnswerServer(Echo(), max_new_tokens=4)
    register_reader("llm", previous, "em")
    try:
        engine = Echo()
        with ServedReader(ReaderConfig(max_new_tokens=4), engine=engine) as reader:
            assert lookup_reader("llm") == (reader.server, "f1")
            bank = MemoryBank()
            bank.apply(Add("Caroline's dog is named Max."), 0)
            answerer = make_answerer("served:llm")
            question = Question("What is the name of Caroline's dog?", ("Max",))
            assert [a.score for a in answerer.answer([question], bank)] == [1.0]
            answerer.answer([question], bank)  # the same read again: from the cache
            assert reader.metrics() == {"reader_calls": 2, "reader_requests": 2,
                                        "reader_hits": 1, "reader_joined": 0,
                                        "reader_engine_calls": 1, "reader_generated": 1}
            assert reader.metrics()["reader_requests"] == 0  # since the previous call
            assert engine.calls == 1 and "1 cache hits" in reader.describe()
        assert lookup_reader("llm") == (previous, "em")
        reader.close()  # idempotent: does not unregister the restored one
        assert lookup_reader("llm") == (previous, "em")
    finally:
        from memgym.envs.answer_server import unregister_reader

        unregister_reader("llm")


def test_eval_refuses_a_served_answerer_without_reader():
    result = CliRunner().invoke(app, ["eval", "memgym/LoCoMoMemoryManager-v1", "-e",
                                      "answerer=served:llm", "--policy", "store-all"])
    assert isinstance(result.exception, ConfigError)
    assert "--reader" in str(result.exception)


def _questions(trajectories) -> int:
    return sum(len(step.info.get("qa", [])) for t in trajectories for step in t.steps)


@pytest.mark.slow
def test_eval_with_a_served_smollm2_reader():
    result = CliRunner().invoke(app, [
        "eval", "memgym/SyntheticMemoryManager-v0", "-e", "answerer=served:llm", "-e",
        "num_keys=1", "-e", "num_updates=2", "-e", "num_questions=1", "-e",
        "interference=0", "--reader", "smollm2",
        "--policy", "store-all", "--episodes", "2", "--num-envs", "2"])
    assert result.exit_code == 0, result.output
    assert "reader 'llm' (smollm2): 2 questions" in result.output
    with pytest.raises(ConfigError):
        lookup_reader("llm")


@pytest.mark.slow
def test_train_scores_with_the_served_reader_and_unregisters_it(tmp_path, monkeypatch):
    readers: list[ServedReader] = []

    class Recorded(ServedReader):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            readers.append(self)

    monkeypatch.setattr(memgym.train, "ServedReader", Recorded)
    env = {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0,
           "num_questions": 1, **SERVED}
    config = TrainConfig(
        run_dir=str(tmp_path), env_id="memgym/SyntheticMemoryManager-v0", env=env,
        iterations=1, episodes_per_iteration=1, group_size=2, num_envs=2, eval_episodes=1,
        tensorboard=False, sampling={"max_new_tokens": 8, "temperature": 1.0},
        reader={"model": "smollm2", "max_new_tokens": 8, "metric": "em"})
    evals = memgym.train.train(config)
    assert "trained" in evals and "untrained" in evals
    with pytest.raises(ConfigError, match="no served reader named 'llm'"):
        lookup_reader("llm")
    [reader] = readers
    stats = reader.stats()
    assert stats.engine_calls >= 1 and stats.requests == stats.hits + stats.joined \
        + stats.generated
    trajectories = trajectories_from_frame(load_trajectories(tmp_path / "trajectories.parquet"))
    assert {t.config["answerer"] for t in trajectories} == {"served:llm"}
    # every question of every episode (baselines, untrained, training, trained) was read by it
    assert stats.requests == _questions(trajectories) > 0
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    training = [t for t in trajectories if t.policy == "policy"]
    assert row["reader_requests"] == _questions(training) == 2
    assert row["reader_requests"] == row["reader_hits"] + row["reader_joined"] \
        + row["reader_generated"]
