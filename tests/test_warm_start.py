"""The SFT warm start of ``memgym train`` (``warm_start:``)."""

import pytest
import torch
from datasets import Dataset

from memgym.config import LoraConfig, ModelConfig, TrainConfig, WarmStartConfig, load_config
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.hf import HFEngine, load_model
from memgym.train import train, with_lora
from memgym.trainers.warm_start import balanced, warm_start

ENV_ID = "memgym/SyntheticMemoryManager-v1"
TINY = {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0, "num_questions": 1}


def test_balanced_keeps_as_many_of_each_kind_of_action_as_of_the_rarest():
    data = Dataset.from_list([{"i": i} for i in range(12)])
    kinds = [("update",) if i in (2, 5, 7) else ("add",) if i in (0, 1, 3, 9) else ()
             for i in range(12)]
    kept = balanced(data, kinds, seed=0)
    ids = sorted(kept["i"])
    assert len(ids) == 9 and {2, 5, 7} <= set(ids)  # every swap, 3 ADDs, 3 empty actions
    assert sum(i in (0, 1, 3, 9) for i in ids) == 3
    assert kept["i"] == balanced(data, kinds, seed=0)["i"]  # seeded
    assert kept["i"] != balanced(data, kinds, seed=1)["i"]
    assert len(balanced(data, [("add",)] * 2 + [()] * 8, seed=0)) == 4


def test_warm_start_config_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="warm_start fine-tunes the model in one process"):
        load_config("experiments/quickstart.yaml", {
            "warm_start": {"policy": "oracle"}, "distributed": {"strategy": "ddp"}})
    config = TrainConfig(env_id=ENV_ID, run_dir=str(tmp_path / "run"),
                         warm_start=WarmStartConfig(policy="nobody"))
    with pytest.raises(ConfigError, match=r"warm_start\.policy must be a baseline"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_micro_batch_accumulates_to_the_batch(monkeypatch, tmp_path):
    """warm_start.micro_batch is TRL's per-pass batch; batch_size / micro_batch passes make one
    optimizer step; a micro-batch that does not divide the batch is refused."""
    with pytest.raises(ConfigError, match=r"micro_batch \(3\) must divide"):
        load_config("experiments/quickstart.yaml", {"warm_start": {
            "policy": "evidence", "batch_size": 8, "micro_batch": 3}})
    seen = []
    monkeypatch.setattr("memgym.trainers.warm_start.train_sft",
                        lambda *args: seen.append(args[-1]) or [{"loss": 1.0}])
    teacher = baselines(ENV_ID)["oracle"]()
    trajectories = run_episodes(ENV_ID, TINY, teacher, [0, 1], num_envs=2, progress=False)
    for micro, expected in ((2, (2, 4)), (None, (8, 1))):
        warm_start(torch.nn.Linear(1, 1), None, trajectories, WarmStartConfig(
            policy="oracle", batch_size=8, micro_batch=micro), tmp_path, seed=0)
        assert (seen[-1].batch_size, seen[-1].grad_accum) == expected


@pytest.mark.slow
def test_warm_start_fits_the_teacher_and_the_engine_generates_with_the_new_weights(tmp_path):
    teacher = baselines(ENV_ID)["oracle"]()
    trajectories = run_episodes(ENV_ID, TINY, teacher, list(range(4)), num_envs=4,
                                progress=False)
    model, tokenizer = load_model("smollm2")
    engine = HFEngine(model, tokenizer)  # built before: its weight copies must follow
    policy = LLMPolicy(engine, SamplingParams(max_new_tokens=40, temperature=0.0))
    step = trajectories[0].steps[0]
    before = policy.act([step.observation], [{}])[0].text
    fit = warm_start(model, tokenizer, trajectories,
                     WarmStartConfig(policy="oracle", epochs=3, learning_rate=3e-4,
                                     batch_size=4, bf16="auto"), tmp_path / "ws", seed=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 autocast only
    assert fit["examples"] == sum(len(t.steps) for t in trajectories)
    assert fit["loss_last"] < fit["loss_first"] / 2
    after = policy.act([step.observation], [{}])[0].text
    saved, _ = load_model(str(tmp_path / "ws"))
    fresh = LLMPolicy(HFEngine(saved, tokenizer),
                      SamplingParams(max_new_tokens=40, temperature=0.0))
    assert after == fresh.act([step.observation], [{}])[0].text != before


@pytest.mark.slow
def test_lora_warm_start_trains_the_adapter_and_saves_one_that_loads(tmp_path):
    """A LoRA policy (with gradient checkpointing, as the quickstart's) warm-starts: only the
    adapter moves, and the saved directory loads (transformers' peft integration) into a model
    with the same logits."""
    teacher = baselines(ENV_ID)["oracle"]()
    trajectories = run_episodes(ENV_ID, TINY, teacher, [0, 1], num_envs=2, progress=False)
    model, tokenizer = load_model(ModelConfig(name_or_path="smollm2", gradient_checkpointing=True))
    model = with_lora(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    warm_start(model, tokenizer, trajectories, WarmStartConfig(
        policy="oracle", learning_rate=1e-3, batch_size=2), tmp_path / "ws", seed=0)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all("lora_" in n for n in changed)
    assert (tmp_path / "ws" / "adapter_config.json").is_file()
    saved, _ = load_model(str(tmp_path / "ws"))
    ids = torch.tensor([tokenizer("The memory bank holds")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, model.eval()(ids).logits)
