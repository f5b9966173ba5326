import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app
from memgym.envs import baselines
from memgym.replay import replay
from memgym.rollouts import run_episodes

from .conftest import ENV_ID


def test_scripted_rollouts_replay_exactly_and_corruption_is_located(tmp_path):
    trajs = []
    for name, cls in baselines(ENV_ID).items():
        trajs += run_episodes(ENV_ID, {"window": 4}, cls(), [0, 1, 2], progress=False)
        assert all(t.policy == name for t in trajs[-3:])
    path = write_trajectories(trajs, tmp_path / "t.parquet")
    report = replay(load_trajectories(path))
    assert report.ok and report.trajectories == 12 and report.steps == 48

    frame = load_trajectories(path)
    steps = [dict(s) for s in frame.at[4, "steps"]]
    steps[2]["action"] = '{"memory": [{"event": "ADD", "text": "forged"}]}'
    frame.at[4, "steps"] = steps
    report = replay(frame)
    (d,) = report.divergences
    assert d.trajectory_id == frame.at[4, "trajectory_id"] and d.step == 2 and d.field == "ops"

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(
        {"memgym.schema_version": "1"}), tmp_path / "bad.parquet")
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "bad.parquet")])
    assert result.exit_code == 1 and "step 2 field ops" in result.output
    assert CliRunner().invoke(app, ["replay", str(path)]).exit_code == 0


def test_baselines_rank_on_validation():
    means = {}
    for name, cls in baselines(ENV_ID).items():
        trajs = run_episodes(ENV_ID, {"split": "val", "window": 4}, cls(), range(32),
                             progress=False)
        means[name] = sum(t.episode_return for t in trajs) / len(trajs)
    assert means["noop"] == 0.0 < means["store-all"] and means["mem0-like"] > 0.0
    assert means["oracle"] > means["mem0-like"]


def test_cli_lists_envs():
    result = CliRunner().invoke(app, ["envs"])
    assert result.exit_code == 0 and ENV_ID in result.output


def test_eval_command_writes_one_table_for_envs_and_policies(tmp_path):
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["eval", ENV_ID, "--policy", "oracle", "--policy", "noop",
                                      "--episodes", "3", "--markdown", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()[2:]]
    means = {policy.strip(): float(mean) for env, policy, mean, *_ in rows}
    assert {env.strip() for env, *_ in rows} == {ENV_ID}
    assert means["oracle"] > means["noop"] == 0.0
