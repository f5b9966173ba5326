import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app, main
from memgym.envs import baselines
from memgym.errors import ConfigError, SchemaError
from memgym.replay import replay
from memgym.rollouts import run_episodes
from memgym.trajectory import SCHEMA_VERSION

from .conftest import ENV_ID

FORGED = '{"memory": [{"event": "ADD", "text": "forged"}]}'


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """12 scripted trajectories (4 baselines x 3 seeds, window 4) in a file."""
    trajs = []
    for name in ("oracle", "mem0-like", "store-all", "noop"):
        cls = baselines(ENV_ID)[name]
        trajs += run_episodes(ENV_ID, {"window": 4}, cls(), [0, 1, 2], progress=False)
        assert all(t.policy == name for t in trajs[-3:])
    return write_trajectories(trajs, tmp_path_factory.mktemp("replay") / "t.parquet")


def _write_frame(frame, path, version=str(SCHEMA_VERSION)):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({"memgym.schema_version": version}), path)
    return path


def test_scripted_rollouts_replay_exactly(saved):
    report = replay(load_trajectories(saved))
    assert report.ok and report.trajectories == 12 and report.steps == 48
    assert CliRunner().invoke(app, ["replay", str(saved), "--verify"]).exit_code == 0


def test_changed_action_is_located_with_a_diff(saved, tmp_path):
    frame = load_trajectories(saved)
    steps = [dict(s) for s in frame.at[4, "steps"]]
    steps[2]["action"] = FORGED
    frame.at[4, "steps"] = steps
    (d,) = replay(frame).divergences
    assert d.trajectory_id == frame.at[4, "trajectory_id"] and d.step == 2 and d.field == "ops"
    assert '\n+  "text": "forged"\n' in d.diff and d.diff.startswith("--- recorded\n+++ replayed")

    result = CliRunner().invoke(app, ["replay", str(_write_frame(frame, tmp_path / "b.parquet")),
                                      "--verify"])
    assert result.exit_code == 1 and "1 divergences" in result.output
    assert f"trajectory {d.trajectory_id} step 2 field ops" in result.output
    assert '"text": "forged"' in result.output


def test_changed_reward_and_observation_are_located(saved):
    frame = load_trajectories(saved)
    steps = [dict(s) for s in frame.at[0, "steps"]]
    steps[1]["reward"] = 0.5
    steps[3]["observation"] = steps[3]["observation"].replace("New turn:", "New turn: (edited)")
    frame.at[0, "steps"] = steps
    (d,) = replay(frame).divergences
    assert (d.step, d.field, d.recorded, d.replayed) == (1, "reward", "0.5", "0.0")
    steps[1]["reward"] = 0.0
    frame.at[0, "steps"] = steps
    (d,) = replay(frame).divergences
    assert (d.step, d.field) == (2, "observation")  # the observation step 2 returned
    assert "-New turn: (edited)" in d.diff and "+New turn:" in d.diff


def test_parallel_replay_reports_the_same_divergences_in_file_order(saved):
    frame = load_trajectories(saved)
    for row, step in ((7, 1), (2, 3)):
        steps = [dict(s) for s in frame.at[row, "steps"]]
        steps[step]["action"] = FORGED
        frame.at[row, "steps"] = steps
    serial, parallel = replay(frame), replay(frame, workers=2)
    assert (parallel.trajectories, parallel.steps) == (serial.trajectories, serial.steps)
    assert (serial.trajectories, serial.steps) == (12, 46)
    assert parallel.divergences == serial.divergences
    assert [(d.trajectory_id, d.step) for d in serial.divergences] == [
        (frame.at[2, "trajectory_id"], 3), (frame.at[7, "trajectory_id"], 1)]
    with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
        replay(frame, workers=0)


@pytest.mark.parametrize(("keep", "bad_step", "message"), [
    (slice(0, 3), 3, "rows hold 3 of 4 steps: steps [3] missing"),
    ([0, 2, 3], 1, "rows hold 3 of 4 steps: steps [1] missing"),
])
def test_truncated_row_is_located(saved, tmp_path, keep, bad_step, message):
    frame = load_trajectories(saved)
    steps = list(frame.at[5, "steps"])
    frame.at[5, "steps"] = steps[keep] if isinstance(keep, slice) else [steps[i] for i in keep]
    report = replay(frame)
    (d,) = report.divergences
    assert (d.trajectory_id, d.step, d.field) == (frame.at[5, "trajectory_id"], bad_step, "steps")
    assert d.recorded == message and report.trajectories == 12
    result = CliRunner().invoke(app, ["replay", str(_write_frame(frame, tmp_path / "t.parquet"))])
    assert result.exit_code == 1 and f"step {bad_step} field steps" in result.output


def test_steps_after_the_end_are_located_not_stepped(saved, tmp_path):
    """A file whose steps go on after the episode ended (the env refuses such a step with
    ResetNeeded) diverges at the last step the env took."""
    frame = load_trajectories(saved)
    steps = list(frame.at[5, "steps"])
    frame.at[5, "steps"] = [*steps, {**steps[-1], "index": 4, "observation": ""}]
    frame.at[5, "num_steps"] = 5
    (d,) = replay(frame).divergences
    assert (d.trajectory_id, d.step, d.field) == (frame.at[5, "trajectory_id"], 3, "episode_end")
    assert d.recorded == "the file holds 1 more steps after this one"
    result = CliRunner().invoke(app, ["replay", str(_write_frame(frame, tmp_path / "t.parquet"))])
    assert result.exit_code == 1 and "step 3 field episode_end" in result.output


def test_wrong_schema_version_and_truncated_file_are_refused(saved, tmp_path, capsys, monkeypatch):
    bad = _write_frame(load_trajectories(saved), tmp_path / "v99.parquet", version="99")
    with pytest.raises(SchemaError, match="schema version 99, this memgym reads version 3"):
        load_trajectories(bad)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(SchemaError, match="not a readable Parquet file"):
        load_trajectories(cut)
    for path, expected in ((bad, "schema version 99"), (cut, "not a readable Parquet")):
        monkeypatch.setattr("sys.argv", ["memgym", "replay", str(path)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2 and expected in capsys.readouterr().out


def test_baselines_rank_on_validation():
    means = {}
    for name, cls in baselines(ENV_ID).items():
        trajs = run_episodes(ENV_ID, {"split": "val", "window": 4}, cls(), range(32),
                             progress=False)
        means[name] = sum(t.episode_return for t in trajs) / len(trajs)
    assert means["noop"] == 0.0 < means["store-all"] and means["mem0-like"] > 0.0
    assert means["oracle"] > means["mem0-like"]


def test_cli_lists_envs():
    from memgym.envs import ENVS

    result = CliRunner().invoke(app, ["envs"])
    assert result.exit_code == 0 and len(ENVS) >= 7
    assert all(env_id in result.output for env_id in ENVS)


def test_eval_command_writes_one_table_for_envs_and_policies(tmp_path):
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["eval", ENV_ID, "--policy", "oracle", "--policy", "noop",
                                      "--episodes", "3", "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()[2:]]
    means = {policy.strip(): float(mean) for env, policy, mean, *_ in rows}
    assert {env.strip() for env, *_ in rows} == {ENV_ID}
    assert means["oracle"] > means["noop"] == 0.0
