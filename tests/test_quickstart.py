"""The quickstart config at a tiny size, through the CLI, with the real model and data."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from memgym.cli import app

pytestmark = pytest.mark.slow


def test_tiny_quickstart_writes_outputs_and_replays(tmp_path):
    run_dir = tmp_path / "qs"
    # one group of 2 rollouts per iteration, 16 new tokens (the sampling section is replaced
    # whole, so it restates the quickstart's temperature), a warm start on one teacher episode
    args = ["train", "experiments/quickstart.yaml", "--set", f"run_dir={run_dir}",
            "--set", "iterations=2", "--set", "episodes_per_iteration=1", "--set",
            "group_size=2", "--set", "eval_episodes=2", "--set", "num_envs=4",
            "--set", "sampling={max_new_tokens: 16, temperature: 0.8}",
            "--set", "warm_start.episodes=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("metrics.csv", "reward_curve.png", "checkpoint/adapter_config.json",
                 "checkpoint/optimizer.pt", "eval.json"):
        assert (run_dir / name).is_file(), name
    # the trajectory dataset: one part per evaluation (8 policies) and per iteration (2)
    parts = sorted((run_dir / "trajectories.parquet").glob("part-*.parquet"))
    evaluated = [v for v in json.loads((run_dir / "eval.json").read_text()).values()
                 if isinstance(v, dict)]
    assert len(parts) == len(evaluated) + 2, parts
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["iteration"]) == [0, 1] and metrics["loss"].notna().all()
    evals = json.loads((run_dir / "eval.json").read_text())
    assert {"noop", "store-all", "mem0-like", "untrained", "warm start", "trained"} <= set(evals)
    assert evals["noop"]["episodes"] == 2
    assert (run_dir / "warm_start" / "adapter_model.safetensors").is_file()  # LoRA
    replayed = CliRunner().invoke(app, ["replay", str(run_dir / "trajectories.parquet")])
    assert replayed.exit_code == 0 and "0 divergences" in replayed.output
