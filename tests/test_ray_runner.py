"""The Ray rollout runner gives the local runner's trajectories (real Ray, real envs, SmolLM2)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app
from memgym.config import ModelConfig, RolloutConfig
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError, PolicyError
from memgym.replay import replay
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.engines import engine_policy
from memgym.rollouts.ray_runner import RayRolloutRunner
from memgym.trajectory import trajectories_from_frame

from .conftest import ENV_ID, episode_view

KWARGS = {"window": 3}
POLICY = baselines(ENV_ID)["mem0-like"]


@pytest.fixture(scope="module")
def runner(ray_local):
    """One runner for the module (actor start-up dominates these tests); its engine sits in a
    placement group with a CPU bundle, the code path GPU engines take."""
    from ray.util import placement_group_table

    config = RolloutConfig(env_workers=2, envs_per_worker=2, max_batch=3, placement_group=True,
                           engine_cpus=0.25)
    runner = RayRolloutRunner(ENV_ID, KWARGS, POLICY, config)
    group = runner.placement_group
    yield runner
    runner.shutdown()
    assert placement_group_table(group)["state"] == "REMOVED"


def test_scripted_ray_run_equals_local_run(runner, tmp_path):
    seeds, groups = [0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 4, 0, 1]
    local = run_episodes(ENV_ID, KWARGS, POLICY(), seeds, groups, progress=False)
    out = runner.run(seeds, groups, progress=False)
    stats = runner.stats
    assert [episode_view(t) for t in out] == [episode_view(t) for t in local]
    assert len({t.id for t in out}) == len(seeds)
    steps = sum(len(t.steps) for t in local)
    assert stats.episodes == len(seeds) and stats.env_steps == steps
    assert stats.worker_failures == stats.reruns == 0
    # steps are batched per call: fewer calls than steps + resets, and no engine call is empty
    assert stats.env_calls < steps + len(seeds)
    assert np.ceil(steps / runner.config.max_batch) <= stats.engine_calls <= steps
    assert sum(stats.episodes_per_node.values()) == len(seeds)
    assert stats.env_seconds > 0 and 0 < stats.policy_seconds < stats.wall_seconds
    report = replay(load_trajectories(write_trajectories(out, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == len(seeds)


def test_engine_runs_in_placement_group_with_cpu_bundle(runner):
    from ray.util import placement_group_table

    table = placement_group_table(runner.placement_group)
    assert table["state"] == "CREATED" and table["bundles"] == {0: {"CPU": 0.25}}


def test_bad_input_raises_typed_errors(runner):
    with pytest.raises(ConfigError, match="one group per seed"):
        runner.run([0, 1], groups=[0], progress=False)
    with pytest.raises(PolicyError, match=r"no engine\.model"):
        runner.load_state_dict({})
    with pytest.raises(ConfigError, match="empty bundle"):
        RayRolloutRunner(ENV_ID, {}, POLICY, RolloutConfig(placement_group=True, engine_cpus=0))


def test_cli_rollout_with_ray_address(ray_local, tmp_path):
    args = ["rollout", ENV_ID, "--policy", "mem0-like", "--episodes", "3", "-e", "window=2"]
    cli = CliRunner()
    local = cli.invoke(app, [*args, "--out", str(tmp_path / "local.parquet")])
    remote = cli.invoke(app, [*args, "--out", str(tmp_path / "ray.parquet"),
                              "--ray-address", "local", "--env-workers", "1"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    local_trajs, ray_trajs = (trajectories_from_frame(load_trajectories(tmp_path / name))
                              for name in ("local.parquet", "ray.parquet"))
    assert [episode_view(t) for t in ray_trajs] == [episode_view(t) for t in local_trajs]
    bad = cli.invoke(app, [*args, "--out", str(tmp_path / "x.parquet"), "--ray-address",
                           "local", "--policy", "no-such-policy"])
    assert bad.exit_code != 0 and not (tmp_path / "x.parquet").exists()


@pytest.mark.slow
def test_smollm2_greedy_ray_run_equals_local_run(ray_local, engine):
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    kwargs, seeds = {"window": 2}, [0, 1]
    local = run_episodes(ENV_ID, kwargs, LLMPolicy(engine, params, name="smollm2"), seeds,
                         num_envs=1, progress=False)
    # batch 1 on both sides: no padding, so the same logits up to thread-count float noise
    config = RolloutConfig(env_workers=1, envs_per_worker=2, max_batch=1, engine_cpus=1)
    with RayRolloutRunner(ENV_ID, kwargs, functools.partial(
            engine_policy, RolloutConfig(), ModelConfig(), params, "smollm2"),
                          config) as runner:
        out = runner.run(seeds, progress=False)
        # trainer weights reach the engine actor: a zeroed final norm changes what it writes,
        # and the original weights bring the original actions back
        weights = engine.model.state_dict()
        runner.load_state_dict({**weights, "model.norm.weight": torch.zeros_like(
            weights["model.norm.weight"])})
        broken = runner.run(seeds[:1], progress=False)[0]
        runner.load_state_dict(weights)
        again = runner.run(seeds[:1], progress=False)[0]
    assert [s.action for s in broken.steps] != [s.action for s in out[0].steps]
    assert episode_view(again) == episode_view(out[0])
    assert [episode_view(t) for t in out] == [episode_view(t) for t in local]
    assert all(t.segments and t.steps[0].completion_ids for t in out)
    for ray_traj, local_traj in zip(out, local, strict=True):
        for a, b in zip(ray_traj.steps, local_traj.steps, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
