"""memgym envs under TRL's GRPOTrainer (real TRL 1.16, real SmolLM2, CPU)."""

import pytest
import torch
from transformers.utils import get_json_schema

from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.integrations.trl import (
    episode_prompt,
    memgym_dataset,
    memgym_environment_factory,
    memgym_reward,
    memgym_rollout_func,
)
from memgym.rollouts import run_episodes

ENV_ID = "memgym/SyntheticMemoryManager-v0"
TINY = {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0, "num_questions": 1}


@pytest.mark.slow
def test_grpo_trainer_steps_on_memgym_returns(tmp_path, monkeypatch):
    from trl import GRPOConfig, GRPOTrainer

    from memgym.rollouts.hf import load_model

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    model, tokenizer = load_model("smollm2")
    rollout = memgym_rollout_func(ENV_ID, num_envs=4, **TINY)
    outputs = []

    def recording_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        outputs.append((list(prompts), out))
        return out

    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=32, temperature=1.0, learning_rate=1e-4, use_cpu=True, bf16=False,
        report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GRPOTrainer(model=model, reward_funcs=memgym_reward, args=args,
                          train_dataset=memgym_dataset(2, first_seed=5),
                          processing_class=tokenizer, rollout_func=recording_rollout)
    trainer.train()

    assert trainer.state.global_step == 1 and len(outputs) == 1
    prompts, out = outputs[0]
    assert len(set(prompts)) == 1 and len(prompts) == 4  # one episode, a group of 4 rollouts
    assert prompts[0] in {episode_prompt(5), episode_prompt(6)}
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask"):
        assert len(out[key]) == 4, key
    for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"],
                                   strict=True):
        assert len(ids) == len(mask) == len(logprobs) and sum(mask) > 0
    returns = out["memgym_return"]
    logged = trainer.state.log_history[0]
    assert logged["reward"] == pytest.approx(sum(returns) / len(returns))
    assert logged["rewards/memgym_reward/mean"] == pytest.approx(sum(returns) / len(returns))
    changed = any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert changed == (len(set(returns)) > 1)  # a step with nonzero advantages moved the policy


def test_rollout_func_needs_seeded_prompts():
    with pytest.raises(ConfigError, match="segment"):
        memgym_rollout_func(ENV_ID, segment="first", **TINY)
    with pytest.raises(ConfigError, match="registered"):
        memgym_rollout_func("memgym/Nope-v0")
    rollout = memgym_rollout_func(ENV_ID, **TINY)
    with pytest.raises(ConfigError, match="memgym episode seed"):
        rollout(["no seed here"], trainer=None)
    assert memgym_reward(["a", "b"], memgym_return=[0.5, -0.1], prompts=["x", "y"]) == [0.5, -0.1]
    data = memgym_dataset(3, first_seed=7)
    assert data["seed"] == [7, 8, 9] and data["prompt"][0] == episode_prompt(7)
    assert memgym_dataset(2, prompt=False).column_names == ["seed"]


def test_environment_factory_replays_the_oracle():
    oracle = run_episodes(ENV_ID, TINY, baselines(ENV_ID)["oracle"](), [3], progress=False)[0]
    cls = memgym_environment_factory(ENV_ID, **TINY)
    assert cls.__name__ == "SyntheticMemoryManager_v0"
    env = cls()  # TRL instantiates it without arguments
    observation = env.reset(seed=3, prompt="ignored")
    assert observation == oracle.steps[0].observation
    for step in oracle.steps[:-1]:
        assert env.act(step.action) != ""
    assert env.act(oracle.steps[-1].action).startswith("The episode has ended")
    assert env.get_reward() == pytest.approx(oracle.episode_return) and oracle.episode_return > 0
    assert env.act("anything").startswith("The episode has ended")  # no step past the end
    # TRL turns public methods into tools through transformers' schema builder
    schema = get_json_schema(env.act)
    assert schema["function"]["name"] == "act"
    assert list(schema["function"]["parameters"]["properties"]) == ["action"]
    with pytest.raises(ConfigError, match="registered"):
        memgym_environment_factory("memgym/Nope-v0")


@pytest.mark.slow
def test_grpo_trainer_runs_the_environment_factory(tmp_path, monkeypatch):
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    from memgym.rollouts.hf import load_model

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    model, tokenizer = load_model("smollm2")
    # SmolLM2's own template has no tool calls (TRL refuses it); it speaks ChatML, so the
    # ChatML-with-tools template of Qwen2.5 that TRL ships (and can parse) fits its tokens
    tokenizer.chat_template = qwen2_5_chat_template
    factory = memgym_environment_factory(ENV_ID, **TINY)
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=16, use_cpu=True, bf16=False, report_to="none", logging_steps=1,
        save_strategy="no", disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, args=args, train_dataset=memgym_dataset(2, prompt=False),
                          processing_class=tokenizer, environment_factory=factory)
    trainer.train()
    assert trainer.state.global_step == 1
    envs = trainer.environments
    assert len(envs) == 2 and all(type(e) is factory for e in envs)
    rewards = [e.get_reward() for e in envs]
    logged = trainer.state.log_history[0]
    if logged["tools/call_frequency"] == 0:  # the env is stepped only through the `act` tool
        assert not any(e.done for e in envs) and rewards == [0.0, 0.0]
    assert logged["rewards/SyntheticMemoryManager_v0/mean"] == pytest.approx(
        sum(rewards) / len(rewards))
