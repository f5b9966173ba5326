"""The training loop's features on a tiny real run: exact resume, metrics (CSV + TensorBoard),
periodic evaluation and plots (real SmolLM2, SyntheticMemoryManager-v0, two-step episodes)."""

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from memgym.config import TrainConfig, load_config
from memgym.errors import ConfigError
from memgym.train import load_policy, train
from memgym.trainers.checkpoint import load_checkpoint_state, save_checkpoint

TINY = {
    "env_id": "memgym/SyntheticMemoryManager-v0",
    "env": {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0,
            "num_questions": 1},
    "eval_env": {"split": "val"},
    "episodes_per_iteration": 1, "group_size": 4, "num_envs": 4, "eval_episodes": 1,
    "eval_every": 2, "checkpoint_every": 1,
    # 32 tokens: some completions parse and some do not, so returns differ within the group
    # and the loss has a real gradient (grad_norm > 0)
    "sampling": {"max_new_tokens": 32, "temperature": 1.0},
}
TIMING = {"seconds", "rollout_seconds"}


def _run(run_dir, **overrides):
    return train(TrainConfig(**{**TINY, "run_dir": str(run_dir), **overrides}))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_resume_reproduces_the_next_iteration_exactly(tmp_path, algorithm):
    algo = {"algorithm": algorithm, "ppo": {"learning_rate": 1e-5}}
    _run(tmp_path / "straight", iterations=2, **algo)
    _run(tmp_path / "resumed", iterations=1, **algo)
    first = load_checkpoint_state(tmp_path / "resumed" / "checkpoint")
    assert first["iteration"] == 1 and first["trainer"]["global_step"] == 1
    _run(tmp_path / "resumed", iterations=2, resume=True, **algo)

    straight = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert list(straight["iteration"]) == list(resumed["iteration"]) == [0, 1]
    columns = [c for c in straight.columns if c not in TIMING]
    pd.testing.assert_frame_equal(straight[columns], resumed[columns], check_exact=True)
    # iteration 0 moved the weights, so iteration 1's rollouts and loss depend on the restored
    # weights; the final weights also depend on the restored Adam moments
    assert straight["grad_norm"].iloc[0] > 0 and straight["reward_std"].iloc[0] > 0

    # weights after the second step are bit-identical
    a = load_file(tmp_path / "straight" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # the resumed run keeps the trajectories of the first part and the baselines' evaluation
    frame = pd.read_parquet(tmp_path / "resumed" / "trajectories.parquet")
    per_policy = frame.groupby("policy")["trajectory_id"].nunique()
    assert per_policy["policy"] == 8 and per_policy["trained"] == 1
    assert per_policy["oracle"] == 1 and per_policy["policy@1"] == 1


@pytest.mark.slow
def test_metrics_tensorboard_eval_and_plots(tmp_path):
    run_dir = tmp_path / "run"
    evals = _run(run_dir, iterations=2, eval_every=1, checkpoint_every=0,
                 grpo={"beta": 0.05, "micro_batch": 4})
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for column in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "adv_mean", "adv_std",
                   "reward_format", "reward_qa", "val_return_mean", "val_parse_error_rate"):
        assert metrics[column].notna().all(), column
    assert metrics["op_add"].notna().any()  # NaN where no action parsed (no ops to mix)
    assert abs(metrics["kl"].iloc[0]) < 1e-6 < metrics["kl"].iloc[1]  # moved off the reference
    assert metrics["val_return_mean"].iloc[-1] == evals["trained"]["mean"]  # same greedy policy

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"reward/reward_mean", "kl/kl", "op/op_add", "val/val_return_mean"} <= set(scalars)
    logged = [e.value for e in events.Scalars("reward/reward_mean")]
    assert logged == pytest.approx(metrics["reward_mean"].tolist())

    for name in ("reward_curve.png", "kl.png", "op_mix.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_config_rejects_bad_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("eval_every: -1\n")
    with pytest.raises(ConfigError, match="eval_every"):
        load_config(path)
    path.write_text("algorithm: sac\n")
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(path)
    assert load_config(path, {"algorithm": "grpo", "resume": True}).resume
    with pytest.raises(ConfigError, match="remove lora"):
        load_config(path, {"algorithm": "ppo", "lora": {"r": 4}})
    ppo = load_config(path, {"algorithm": "ppo", "ppo": {"kl_coef": 0.1}, "grpo": {"beta": 0}})
    assert ppo.needs_reference() and not load_config(path, {"algorithm": "ppo"}).needs_reference()


@pytest.mark.slow
def test_lora_checkpoint_reloads_the_adapter_exactly(tmp_path):
    config = TrainConfig(run_dir=str(tmp_path), lora={"r": 4, "alpha": 8})
    model, tokenizer, ref = load_policy(config)
    assert ref is None  # beta = 0: no reference model is kept
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # move the adapter off its init (B = 0) so the check means something
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"global_step": 3})
    assert (tmp_path / "ckpt" / "adapter_config.json").is_file()
    reloaded, _, _ = load_policy(config, tmp_path / "ckpt")
    params = dict(reloaded.named_parameters())
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
        assert params[n].requires_grad == p.requires_grad, n
