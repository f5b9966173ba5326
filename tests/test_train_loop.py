"""The training loop's features on a tiny real run: exact resume, metrics (CSV + TensorBoard),
periodic evaluation and plots (real SmolLM2, SyntheticMemoryManager-v0, two-step episodes)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import memgym.train
from memgym.config import TrainConfig, load_config
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.report import PRIVILEGED
from memgym.train import load_policy, train
from memgym.trainers.checkpoint import load_checkpoint_state, save_checkpoint
from memgym.trajectory import load_trajectories, trajectories_from_frame
from memgym.trajectory_log import dataset_parts

from .conftest import episode_view

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
ALGORITHMS = {
    # beta > 0: a frozen KL reference (KL 0 at iteration 0, > 0 after); micro_batch 4: two
    # micro-batches per update; eval_every 1: validation after every iteration
    "grpo": {"algorithm": "grpo", "eval_every": 1, "grpo": {"beta": 0.05, "micro_batch": 4}},
    "ppo": {"algorithm": "ppo", "ppo": {"learning_rate": 1e-5}},
}


def _run(run_dir, **overrides):
    return train(TrainConfig(**{**TINY, "run_dir": str(run_dir), **overrides}))


class TwoIterationRun:
    """An uninterrupted 2-iteration run in ``straight``, whose checkpoint after iteration 1 is
    moved to ``stopped/checkpoint`` as it is saved (the straight run saves a fresh one next):
    ``stopped`` is what a run that stopped during iteration 1 leaves behind. Its trajectory file
    is the straight run's, so it also holds what followed the checkpoint (iteration 1's rollouts
    and the evaluations), which a resume must drop."""

    def __init__(self, root: Path, algorithm: str) -> None:
        self.straight, self.stopped = root / "straight", root / "stopped"

        def keep_first(directory, *args, **kwargs):  # the real save, then its files moved
            save_checkpoint(directory, *args, **kwargs)
            if not self.stopped.exists():
                self.stopped.mkdir()
                Path(directory).rename(self.stopped / "checkpoint")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(memgym.train, "save_checkpoint", keep_first)
            self.evals = _run(self.straight, iterations=2, **ALGORITHMS[algorithm])
        shutil.copytree(self.straight / "trajectories.parquet",
                        self.stopped / "trajectories.parquet")


@pytest.fixture(scope="module")
def two_iteration_run(tmp_path_factory):
    """``algorithm -> TwoIterationRun``, trained once per module and algorithm."""
    runs: dict[str, TwoIterationRun] = {}

    def get(algorithm: str) -> TwoIterationRun:
        if algorithm not in runs:
            runs[algorithm] = TwoIterationRun(tmp_path_factory.mktemp(algorithm), algorithm)
        return runs[algorithm]
    yield get
    for run in runs.values():  # two 1.6 GB checkpoints per algorithm: free the disk
        shutil.rmtree(run.straight.parent)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_resume_reproduces_the_next_iteration_exactly(two_iteration_run, algorithm):
    run = two_iteration_run(algorithm)
    first = load_checkpoint_state(run.stopped / "checkpoint")
    assert first["iteration"] == 1 and first["trainer"]["global_step"] == 1
    _run(run.stopped, iterations=2, resume=True, checkpoint_every=0, **ALGORITHMS[algorithm])

    straight = pd.read_csv(run.straight / "metrics.csv")
    resumed = pd.read_csv(run.stopped / "metrics.csv")
    assert list(straight["iteration"]) == list(resumed["iteration"]) == [0, 1]
    columns = [c for c in straight.columns if c not in TIMING]
    pd.testing.assert_frame_equal(straight[columns], resumed[columns], check_exact=True)
    # iteration 0 moved the weights, so iteration 1's rollouts and loss depend on the restored
    # weights; the final weights also depend on the restored Adam moments
    assert straight["grad_norm"].iloc[0] > 0 and straight["reward_std"].iloc[0] > 0

    # the evaluation, its intervals and paired differences included, survives the resume (the
    # baselines' per-episode returns travel in the checkpoint)
    evals = {name: json.loads((run_dir / "eval.json").read_text())
             for name, run_dir in (("straight", run.straight), ("stopped", run.stopped))}
    for name in evals:
        evals[name].pop("wall_seconds")
    assert evals["straight"] == evals["stopped"]
    assert evals["stopped"]["untrained"]["paired_with"] in set(baselines(TINY["env_id"])) - (
        PRIVILEGED)

    # weights after the second step are bit-identical
    a = load_file(run.straight / "checkpoint" / "model.safetensors")
    b = load_file(run.stopped / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # the resumed run keeps the trajectories up to its checkpoint (the baselines' evaluation
    # included) and adds its own: the straight run's, token for token
    frame = load_trajectories(run.stopped / "trajectories.parquet")
    per_policy = frame.groupby("policy")["trajectory_id"].nunique()
    assert per_policy["policy"] == 8 and per_policy["trained"] == 1
    assert per_policy["oracle"] == 1 and per_policy["policy@1"] == 1
    straight_frame = load_trajectories(run.straight / "trajectories.parquet")
    assert ([episode_view(t) for t in trajectories_from_frame(frame)] ==
            [episode_view(t) for t in trajectories_from_frame(straight_frame)])
    # every evaluation and iteration appended one part with its own trajectories only
    parts = {name: [(set(t["policy"].tolist()), t["trajectory_id"].nunique()) for t in
                    map(load_trajectories, dataset_parts(run_dir / "trajectories.parquet"))]
             for name, run_dir in (("straight", run.straight), ("stopped", run.stopped))}
    assert parts["straight"] == parts["stopped"]
    assert [p for p in parts["straight"] if "policy" in p[0]] == [({"policy"}, 4)] * 2
    assert all(len(policies) == 1 for policies, _ in parts["straight"])


@pytest.mark.slow
def test_metrics_tensorboard_eval_and_plots(two_iteration_run):
    run = two_iteration_run("grpo")  # beta 0.05, micro_batch 4, eval_every 1
    run_dir, evals = run.straight, run.evals
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for column in ("loss", "kl", "clip_frac", "entropy", "grad_norm", "adv_mean", "adv_std",
                   "reward_format", "reward_qa", "val_return_mean", "val_parse_error_rate"):
        assert metrics[column].notna().all(), column
    assert metrics["op_add"].notna().any()  # NaN where no action parsed (no ops to mix)
    assert abs(metrics["kl"].iloc[0]) < 1e-6 < metrics["kl"].iloc[1]  # moved off the reference
    assert metrics["val_return_mean"].iloc[-1] == evals["trained"]["mean"]  # same greedy policy
    assert json.loads((run_dir / "eval.json").read_text()) == evals
    best = max((r for name, r in evals.items() if name in baselines(TINY["env_id"])
                and name not in PRIVILEGED), key=lambda r: r["mean"])
    for name in ("untrained", "trained", best["policy"]):
        row = evals[name]
        assert row["episodes"] == TINY["eval_episodes"]
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        assert row["paired_with"] == best["policy"]
        assert row["paired_diff"] == pytest.approx(row["mean"] - best["mean"])
    assert best["paired_diff_low"] == best["paired_diff_high"] == 0.0

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"reward/reward_mean", "kl/kl", "op/op_add", "val/val_return_mean"} <= set(scalars)
    logged = [e.value for e in events.Scalars("reward/reward_mean")]
    assert logged == pytest.approx(metrics["reward_mean"].tolist())

    for name in ("reward_curve.png", "kl.png", "op_mix.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "experiments").glob(
    "**/*.yaml")), ids=lambda p: p.name)
def test_experiment_configs_validate(path):
    """The quickstart and recipes parse with the current trainer configs (shared base,
    registries): a renamed or removed field fails here, not after a run's warm start."""
    config = load_config(path)
    section = config.ppo if config.algorithm == "ppo" else config.grpo
    assert section.learning_rate > 0 and section.micro_batch >= 1


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
