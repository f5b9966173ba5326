"""SFT warm start on oracle trajectories (real SmolLM2, real TRL SFTTrainer, CPU)."""

import gymnasium as gym
import pytest
import torch
from datasets import Dataset
from typer.testing import CliRunner

from memgym.cli import app
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.rollouts import TokenizedPolicy, run_episodes
from memgym.rollouts.chat import chat_prompt
from memgym.rollouts.hf import HFEngine, load_model, load_tokenizer
from memgym.trainers.sft import (
    SFTSettings,
    cpu_has_native_bf16,
    make_sft_trainer,
    sft_dataset,
    train_sft,
)
from memgym.trajectory import write_trajectories

ENV_ID = "memgym/SyntheticMemoryManager-v0"
TINY = {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0, "num_questions": 1}


@pytest.fixture(scope="module")
def oracle_trajectories():
    oracle = baselines(ENV_ID)["oracle"]()
    return run_episodes(ENV_ID, TINY, oracle, seeds=list(range(4)), num_envs=4, progress=False)


def _completion_logprob(model, example) -> float:
    """Mean logprob of the tokens that carry a label (the completion)."""
    ids = torch.tensor([example["input_ids"]])
    mask = torch.tensor(example["labels"][1:]) != -100
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return float(logp[mask].mean())


@pytest.mark.slow
def test_sft_learns_only_the_oracle_actions(oracle_trajectories, tmp_path):
    data = sft_dataset(oracle_trajectories, policy="oracle")
    assert len(data) == 8  # 4 episodes x 2 parsed steps
    model, tokenizer = load_model("smollm2")  # a fresh copy: trained in place
    trainer = make_sft_trainer(model, tokenizer, data, tmp_path / "sft", SFTSettings(
        epochs=2, learning_rate=1e-4, batch_size=4))
    engine = HFEngine(model, tokenizer)
    examples = list(trainer.train_dataset)
    for example, row in zip(examples, data, strict=True):
        # the prompt is templated exactly as the rollout engine templates it...
        prompt = engine.prompt_ids(row["prompt"])
        assert example["input_ids"][:len(prompt)] == prompt
        # ...and only the tokens after it carry labels: the action and its end of turn
        assert example["labels"] == [-100] * len(prompt) + example["input_ids"][len(prompt):]
        learned = tokenizer.decode(example["input_ids"][len(prompt):], skip_special_tokens=True)
        assert learned.strip() == row["completion"][0]["content"]
    batch = trainer.data_collator(examples[:2])
    for i, example in enumerate(examples[:2]):
        n = len(example["input_ids"])
        assert batch["labels"][i, :n].tolist() == example["labels"]
        assert (batch["labels"][i, n:] == -100).all()

    before = [_completion_logprob(model, e) for e in examples]
    trainer.train()
    after = [_completion_logprob(model, e) for e in examples]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert sum(after) / len(after) > sum(before) / len(before) + 0.5


def test_sft_dataset_selects_and_rejects(oracle_trajectories):
    assert sft_dataset(oracle_trajectories, min_return=-1.0).column_names == ["prompt",
                                                                              "completion"]
    with pytest.raises(ConfigError, match="no parsed step"):
        sft_dataset(oracle_trajectories, policy="noop")
    with pytest.raises(ConfigError, match="min_return"):
        sft_dataset(oracle_trajectories, min_return=10.0)


@pytest.mark.slow
def test_sft_cli_writes_a_model_memgym_can_load(oracle_trajectories, tmp_path):
    path = write_trajectories(oracle_trajectories, tmp_path / "oracle.parquet")
    out = tmp_path / "warm"
    result = CliRunner().invoke(app, ["sft", str(path), "--out", str(out), "--epochs", "1",
                                      "--batch-size", "8", "--policy", "oracle"])
    assert result.exit_code == 0, result.output
    assert "8 examples, 1 steps" in result.output
    model, _ = load_model(str(out))
    base, _ = load_model("smollm2")
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed  # the saved weights are the fine-tuned ones


def test_pad_to_multiple_of_pads_batches_without_changing_the_loss(oracle_trajectories, smollm2,
                                                                   tmp_path):
    """``pad_to_multiple_of`` (few matmul shapes: a small oneDNN primitive cache under bf16)
    reaches TRL's collator, and the padding is masked: the same loss as padding to the
    longest."""
    model, tokenizer = smollm2
    data = sft_dataset(oracle_trajectories, policy="oracle")
    losses = {}
    for multiple in (None, 64):
        trainer = make_sft_trainer(model, tokenizer, data, tmp_path / f"sft{multiple}",
                                   SFTSettings(pad_to_multiple_of=multiple))
        examples = list(trainer.train_dataset)[:3]
        batch = trainer.data_collator(examples)
        width = max(len(e["input_ids"]) for e in examples)
        assert batch["input_ids"].shape[1] == (width if multiple is None
                                               else -(-width // multiple) * multiple)
        with torch.no_grad():
            losses[multiple] = float(model(input_ids=batch["input_ids"],
                                           attention_mask=batch["attention_mask"],
                                           labels=batch["labels"]).loss)
    assert width % 64  # the padded batch is wider than the longest example
    assert losses[64] == pytest.approx(losses[None], rel=1e-5)


def test_tokenized_teacher_steps_are_learned_on_the_prompt_the_policy_is_sent(smollm2, tmp_path):
    """MemAct gives its context as chat messages (``info["chat"]``): its instructions are the
    system message, not part of the observation. A TokenizedPolicy teacher's steps become
    token examples whose prompt is that chat, as the policy is sent it at every step."""
    model, tokenizer = smollm2
    env_id = "memgym/MemAct-v1"
    teacher = TokenizedPolicy(baselines(env_id)["oracle"](), tokenizer)
    trajs = run_episodes(env_id, {"split": "val"}, teacher, [7, 8], progress=False)
    steps = [s for t in trajs for s in t.steps]
    data = sft_dataset(trajs)
    assert data.column_names == ["input_ids", "completion_mask"] and len(data) == len(steps) > 2
    for row, step in zip(data, steps, strict=True):
        assert row["input_ids"] == step.prompt_ids + step.completion_ids
        assert row["completion_mask"] == [0] * len(step.prompt_ids) + [1] * len(
            step.completion_ids)
    env = gym.make(env_id, split="val")
    obs, info = env.reset(seed=7)
    sent = tokenizer.apply_chat_template(chat_prompt(obs, info), add_generation_prompt=True,
                                         tokenize=False)
    as_observation = tokenizer.apply_chat_template(chat_prompt(obs, {}),
                                                   add_generation_prompt=True, tokenize=False)
    assert sent != as_observation  # what the text records would have trained on
    assert tokenizer.decode(steps[0].prompt_ids) == sent
    trainer = make_sft_trainer(model, tokenizer, data, tmp_path / "sft")  # nothing trained
    for example, step in zip(trainer.train_dataset, steps, strict=True):
        assert example["input_ids"] == step.prompt_ids + step.completion_ids
        assert example["labels"] == [-100] * len(step.prompt_ids) + step.completion_ids
    with pytest.raises(ConfigError, match="token ids throughout"):
        sft_dataset(trajs + run_episodes(env_id, {"split": "val"}, baselines(env_id)["oracle"](),
                                         [7], progress=False))


def _tiny_sft(examples: int):
    """SmolLM2's tokenizer, a random one-layer Llama and ``examples`` copies of one 6-token
    example (loss on its last 3 tokens): SFT mechanics in a second."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2))
    data = Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5, 6]] * examples,
                              "completion_mask": [[0, 0, 0, 1, 1, 1]] * examples})
    return tokenizer, model, data


def test_bf16_sft_leaves_the_model_in_float32_compute(tmp_path):
    """Accelerate wraps ``forward`` in bf16 autocast for a bf16 SFT; the wrapper must not
    outlive training (it once made every later rollout and GRPO update bf16: ~100x slower on an
    AVX2 CPU). Mutation: without the unwrap in ``train_sft`` the layer runs under autocast."""
    tokenizer, model, data = _tiny_sft(2)
    autocast = []
    model.model.layers[0].register_forward_hook(
        lambda *_: autocast.append(torch.is_autocast_enabled("cpu")))
    train_sft(model, tokenizer, data, tmp_path, SFTSettings(bf16=True, batch_size=2))
    assert autocast and all(autocast)  # trained under autocast
    autocast.clear()
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert autocast == [False]


def test_auto_bf16_follows_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, native in (("fpu sse2 avx2 fma", False), ("avx2 avx512f avx512_bf16", True),
                          ("avx512f amx_tile amx_bf16", True)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_native_bf16(cpuinfo) is native
    assert cpu_has_native_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_lr_scheduler_sets_the_learning_rate_of_each_step(schedule, tmp_path):
    """``linear`` decays the rate to 0 over the run (transformers' schedule, no warmup);
    ``constant`` keeps it. Mutation: ignoring the setting makes the linear case fail."""
    tokenizer, model, data = _tiny_sft(4)
    history = train_sft(model, tokenizer, data, tmp_path, SFTSettings(
        learning_rate=1e-3, lr_scheduler=schedule, batch_size=1))
    rates = [h["learning_rate"] for h in history if "learning_rate" in h]
    expected = [1e-3] * 4 if schedule == "constant" else [1e-3, 7.5e-4, 5e-4, 2.5e-4]
    assert rates == pytest.approx(expected)
