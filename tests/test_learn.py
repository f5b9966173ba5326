"""``memgym learn``: the per-env table from the runs' eval.json, the README block, and one real
tiny run trained through the command."""

import json
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from gymnasium.envs.registration import parse_env_id
from typer.testing import CliRunner

from memgym.cli import app
from memgym.config import load_config
from memgym.envs import ENVS, baselines
from memgym.errors import ConfigError
from memgym.learn import END, START, learn, run_rows, summary, write_block

ENV_ID = "memgym/SyntheticMemoryManager-v0"


def _row(policy, mean, low, high, paired_with="store-all", diff_low=None):
    return {"policy": policy, "mean": mean, "std": 0.1, "episodes": 48,
            "parse_error_rate": 0.0, "ci_low": low, "ci_high": high,
            "paired_with": paired_with, "paired_diff": mean - 0.5,
            "paired_diff_low": mean - 0.6 if diff_low is None else diff_low,
            "paired_diff_high": mean - 0.4}


def _config(tmp_path, name, evals=None, **extra):
    run_dir = tmp_path / f"run-{name}"
    config = {"run_dir": str(run_dir), "env_id": ENV_ID,
              "env": {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0,
                      "num_questions": 1}, "eval_env": {"split": "val"}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    if evals is not None:
        run_dir.mkdir()
        (run_dir / "eval.json").write_text(json.dumps({**evals, "wall_seconds": 12.0}))
    return path


def test_rows_put_the_best_heuristic_after_the_untrained_policy(tmp_path):
    evals = {"oracle": _row("oracle", 1.0, 1.0, 1.0), "noop": _row("noop", 0.0, 0.0, 0.0),
             "store-all": _row("store-all", 0.5, 0.4, 0.6, diff_low=0.0),
             "untrained": _row("untrained", 0.1, 0.05, 0.15),
             "warm start": _row("warm start", 0.4, 0.3, 0.5),
             "trained": _row("trained", 0.7, 0.6, 0.8, diff_low=0.1)}
    rows = run_rows(_config(tmp_path, "a", evals))
    assert [r.policy for _, r in rows] == ["untrained", "store-all", "warm start", "trained"]
    assert {env for env, _ in rows} == {ENV_ID}
    assert rows[-1][1].mean == 0.7 and rows[-1][1].paired_diff_low == pytest.approx(0.1)
    assert summary(rows).startswith("1 of 1 env families beat")

    lost = {**evals, "trained": _row("trained", 0.55, 0.45, 0.65, diff_low=-0.02)}
    both = rows + run_rows(_config(tmp_path, "b", lost))
    assert summary(both) == (f"1 of 2 env families beat their best heuristic (paired 95% CI "
                             f"above 0): {ENV_ID}.\n")


def test_a_run_without_a_trained_row_or_eval_json_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train it first"):
        run_rows(_config(tmp_path, "none"))
    untrained_only = {"untrained": _row("untrained", 0.1, 0.0, 0.2)}
    with pytest.raises(ConfigError, match="expected a 'trained' row"):
        run_rows(_config(tmp_path, "partial", untrained_only))
    with pytest.raises(ConfigError, match="at least one config"):
        learn([])


def test_the_block_between_the_markers_is_replaced_and_nothing_else(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    write_block(readme, "| new |\n")
    assert readme.read_text() == f"# title\n\nbefore\n{START}\n| new |\n{END}\nafter\n"
    write_block(readme, "| newer |\n")  # idempotent: the markers stay
    assert readme.read_text().count(START) == 1 and "| new |" not in readme.read_text()
    readme.write_text(f"{END}\n{START}\n")
    with pytest.raises(ConfigError, match="markers"):
        write_block(readme, "x")


def test_table_only_through_the_cli(tmp_path):
    evals = {"store-all": _row("store-all", 0.5, 0.4, 0.6, diff_low=0.0),
             "untrained": _row("untrained", 0.1, 0.05, 0.15),
             "trained": _row("trained", 0.7, 0.6, 0.8, diff_low=0.1)}
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    result = CliRunner().invoke(app, ["learn", str(_config(tmp_path, "c", evals)),
                                      "--table-only", "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert f"| {ENV_ID} | trained | 0.7000 | [0.6000, 0.8000] |" in text
    assert "1 of 1 env families beat" in text and "1 of 1 env families beat" in result.output


@pytest.mark.slow
def test_one_command_trains_each_config_and_writes_the_table(tmp_path):
    """A real (tiny) SmolLM2 run through ``memgym learn``: the child ``memgym train`` writes
    eval.json, and the table holds its rows."""
    path = _config(tmp_path, "tiny", iterations=1, episodes_per_iteration=1, group_size=2,
                   num_envs=2, eval_episodes=2, eval_every=0, checkpoint_every=0,
                   sampling={"max_new_tokens": 16, "temperature": 1.0})
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    rows = learn([path], readme)
    assert rows[0][1].policy == "untrained" and rows[-1][1].policy == "trained"
    assert all(r.episodes == 2 for _, r in rows)
    assert "| trained |" in readme.read_text()


def test_every_registered_env_family_has_a_learn_config_that_builds_its_envs():
    """Issue 18 item 3: one config per env family (``memgym learn``'s input), each valid, its
    train and eval envs constructible and its warm-start teacher a baseline of its env.
    LongMemEvalMemoryManager is LoCoMo's memory-manager env on another dataset: not yet."""
    root = Path(__file__).resolve().parents[1]
    configs = [root / "experiments" / "quickstart.yaml",
               *sorted((root / "experiments" / "learn").glob("*.yaml"))]
    covered = set()
    for path in configs:
        config = load_config(path)
        assert config.env_id in ENVS, path
        for kwargs in (config.env, {**config.env, **config.eval_env}):
            gym.make(config.env_id, **kwargs).close()
        if config.warm_start is not None:
            assert config.warm_start.policy in baselines(config.env_id), path
        covered.add(parse_env_id(config.env_id)[:2])
    families = {parse_env_id(env_id)[:2] for env_id in ENVS}
    assert families - covered == {("memgym", "LongMemEvalMemoryManager")}
