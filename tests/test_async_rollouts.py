"""Training rollouts from config: weight sync every ``sync_every`` updates, rollouts one batch
ahead with bounded staleness, and ``max_staleness: 0`` equal to the plain synchronous loop
(real SmolLM2, SyntheticMemoryManager-v0, two-step episodes)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from memgym.batch import RolloutBatch
from memgym.config import TrainConfig
from memgym.engine import SamplingParams
from memgym.errors import RolloutError
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.hf import HFEngine
from memgym.rollouts.pipeline import TrainingRollouts
from memgym.train import load_policy, train
from memgym.trainers.grpo import GRPOTrainer
from memgym.trajectory import load_trajectories

from .test_train_loop import TINY

ASYNC = {"rollout": {"max_staleness": 1}, "grpo": {"behaviour_logprobs": "sampler"}}


def _config(tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "run_dir": str(tmp_path), "iterations": 3, "eval_every": 0,
                          "checkpoint_every": 0, "tensorboard": False, **overrides})


def test_asynchrony_needs_an_importance_correction_and_enough_staleness():
    with pytest.raises(ValueError, match="off-policy"):
        TrainConfig(rollout={"max_staleness": 1})
    with pytest.raises(ValueError, match="sync_every 2"):
        TrainConfig(rollout={"sync_every": 2})
    TrainConfig(rollout={"sync_every": 2, "max_staleness": 2}, grpo={"tis_cap": 2.0})


@pytest.mark.slow
def test_the_engine_copy_gets_the_weights_every_sync_every_updates(tmp_path, engine):
    config = _config(tmp_path, rollout={"max_staleness": 2, "sync_every": 2},
                     grpo={"tis_cap": 2.0})
    model = engine.model
    rollouts = TrainingRollouts(config, model, engine.tokenizer, SamplingParams(), tmp_path)
    try:
        served = rollouts.engine.model
        assert served is not model and rollouts.ahead
        name = "model.norm.weight"
        original = model.state_dict()[name].clone()
        for step, pushed in [(0, True), (1, False), (2, True), (3, False)]:
            with torch.no_grad():
                model.get_parameter(name).add_(1.0)  # an "update"
            rollouts.sync(model, step)
            same = torch.equal(served.state_dict()[name], model.state_dict()[name])
            assert same == pushed, step
            assert rollouts.version == (step if pushed else step - 1)
        with pytest.raises(RolloutError, match="no rollout is pending"):
            rollouts.result()
    finally:
        rollouts.close()
        with torch.no_grad():
            model.get_parameter(name).copy_(original)


@pytest.mark.slow
def test_rollouts_run_one_batch_ahead_at_most_max_staleness_old(tmp_path):
    train(_config(tmp_path, **ASYNC))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    # iteration 0's batch was generated before any update; every later one while the trainer
    # updated on the previous batch: exactly one version behind
    assert metrics["rollout_staleness"].tolist() == [0, 1, 1]
    frame = load_trajectories(tmp_path / "trajectories.parquet")
    trained = frame[frame["policy"] == "policy"].groupby("trajectory_id")["policy_version"].first()
    assert sorted(trained.value_counts().items()) == [(0, 8), (1, 4)]  # batches 0, 1: version 0


@pytest.mark.slow
def test_max_staleness_0_is_the_plain_synchronous_loop(tmp_path):
    config = _config(tmp_path / "run", iterations=2)
    train(config)
    losses = pd.read_csv(tmp_path / "run" / "metrics.csv")["loss"].tolist()
    # the synchronous loop by hand: rollout on the trainer's own model, then update
    torch.manual_seed(config.seed)
    model, tokenizer, _ = load_policy(config)
    trainer = GRPOTrainer(model, tokenizer.pad_token_id, config.grpo)
    sampling = SamplingParams(max_new_tokens=config.sampling.max_new_tokens,
                              temperature=config.sampling.temperature)
    engine, rng = HFEngine(model, tokenizer, config.num_envs), np.random.default_rng(config.seed)
    for loss in losses:
        episodes = rng.integers(0, 2**31 - 1, size=config.episodes_per_iteration)
        seeds = [int(s) for s in episodes for _ in range(config.group_size)]
        policy = LLMPolicy(engine, replace(sampling, seed=int(rng.integers(2**31 - 1))))
        trajs = run_episodes(config.env_id, config.env, policy, seeds, num_envs=config.num_envs)
        assert trainer.step(RolloutBatch.from_rollouts(trajs, sampling))["loss"] == (
            pytest.approx(loss, abs=1e-6))

