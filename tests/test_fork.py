import dataclasses

import pytest
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app
from memgym.envs import baselines
from memgym.errors import ConfigError, ReplayError
from memgym.replay import replay
from memgym.rollouts import run_episodes
from memgym.rollouts.fork import fork_episodes, fork_group
from memgym.trajectory import trajectories_from_frame

from .conftest import ENV_ID

KWARGS = {"window": 4}


@pytest.fixture(scope="module")
def parents():
    return run_episodes(ENV_ID, KWARGS, baselines(ENV_ID)["noop"](), [0, 1, 2], progress=False)


@pytest.mark.parametrize("k", [0, 2, 3])
def test_fork_at_step_k_then_replay_verifies(parents, tmp_path, k):
    forks = fork_episodes(parents, k, baselines(ENV_ID)["store-all"](), samples=2,
                          progress=False)
    assert len(forks) == 6
    for i, fork in enumerate(forks):
        parent = parents[i // 2]
        assert (fork.parent_id, fork.parent_step, fork.seed) == (parent.id, k, parent.seed)
        assert fork.group == fork_group(parent.id, k) and fork.policy == "store-all"
        assert [s.action for s in fork.steps[:k]] == [s.action for s in parent.steps[:k]]
        assert len(fork.steps) == len(parent.steps) and fork.steps[-1].terminated
        assert all(s.ops[0]["kind"] == "add" for s in fork.steps[k:])  # the new policy acted
    # a fork continues exactly where the parent was: same as rolling out the new policy on
    # an env that saw the parent's first k actions (noop: an empty bank) from the reset
    if k == 0:
        fresh = run_episodes(ENV_ID, KWARGS, baselines(ENV_ID)["store-all"](), [0],
                             progress=False)[0]
        assert [s.observation for s in forks[0].steps] == [s.observation for s in fresh.steps]
        assert forks[0].episode_return == fresh.episode_return
    frame = load_trajectories(write_trajectories(forks, tmp_path / "fork.parquet"))
    report = replay(frame)
    assert report.ok and report.steps == 24
    back = trajectories_from_frame(frame)
    assert [(t.parent_id, t.parent_step, t.group) for t in back] == [
        (t.parent_id, t.parent_step, t.group) for t in forks]


def test_fork_refuses_bad_step_and_diverging_parent(parents):
    policy = baselines(ENV_ID)["noop"]()
    with pytest.raises(ConfigError, match="fork step must be in"):
        fork_episodes(parents, 4, policy, progress=False)
    forged = dataclasses.replace(parents[0], steps=list(parents[0].steps))
    forged.steps[0] = dataclasses.replace(
        forged.steps[0], action='{"memory": [{"event": "ADD", "text": "forged"}]}')
    with pytest.raises(ReplayError, match="step 0 field ops"):
        fork_episodes([forged], 2, policy, progress=False)


def test_cli_fork_writes_and_verifies(parents, tmp_path):
    path = write_trajectories(parents, tmp_path / "p.parquet")
    out = tmp_path / "fork.parquet"
    result = CliRunner().invoke(app, [
        "replay", str(path), "--fork-at", "1", "--policy", "oracle", "--out", str(out),
        "--episode", parents[1].id[:8], "--samples", "3", "--verify"])
    assert result.exit_code == 0, result.output
    assert "3 forks of 1 trajectories at step 1" in result.output
    assert "0 divergences" in result.output
    forks = trajectories_from_frame(load_trajectories(out))
    assert {(t.parent_id, t.parent_step) for t in forks} == {(parents[1].id, 1)}
    bad = CliRunner().invoke(app, ["replay", str(path), "--fork-at", "1", "--out", str(out)])
    assert bad.exit_code != 0 and "--fork-at needs --policy and --out" in str(bad.exception)


@pytest.mark.slow
def test_llm_fork_trains_only_its_own_steps(parents, engine, tmp_path):
    from memgym.engine import SamplingParams
    from memgym.rollouts import LLMPolicy

    policy = LLMPolicy(engine, SamplingParams(max_new_tokens=24, temperature=1.0, seed=0),
                       name="smollm2")
    (fork,) = fork_episodes(parents[:1], 2, policy, progress=False)
    assert [s.completion_ids for s in fork.steps[:2]] == [[], []]
    assert all(s.completion_ids for s in fork.steps[2:])
    assert [(g.step_start, g.step_end) for g in fork.segments] == [(2, 3), (3, 4)]
    frame = load_trajectories(write_trajectories([fork], tmp_path / "llm.parquet"))
    assert replay(frame).ok
    (back,) = trajectories_from_frame(frame)
    assert back.segments == fork.segments
