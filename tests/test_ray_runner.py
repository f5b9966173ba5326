"""The Ray rollout runner gives the local runner's trajectories (real Ray, real envs, SmolLM2)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from typer.testing import CliRunner

from memgym import load_trajectories, write_trajectories
from memgym.cli import app
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError, PolicyError
from memgym.replay import replay
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.ray_actors import hf_policy
from memgym.rollouts.ray_config import RolloutConfig
from memgym.rollouts.ray_runner import RayRolloutRunner
from memgym.trajectory import trajectories_from_frame

from .conftest import ENV_ID, episode_view

SYNTHETIC = "memgym/SyntheticMemoryManager-v0"
CASES = [(ENV_ID, {"window": 3}, "mem0-like"), (SYNTHETIC, {}, "oracle")]


@pytest.mark.parametrize(("env_id", "kwargs", "name"), CASES)
def test_scripted_ray_run_equals_local_run(ray_local, tmp_path, env_id, kwargs, name):
    policy = baselines(env_id)[name]
    seeds, groups = [0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 4, 0, 1]
    local = run_episodes(env_id, kwargs, policy(), seeds, groups, progress=False)
    config = RolloutConfig(env_workers=2, envs_per_worker=2, max_batch=3)
    with RayRolloutRunner(env_id, kwargs, policy, config) as runner:
        out = runner.run(seeds, groups, progress=False)
        stats = runner.stats
    assert [episode_view(t) for t in out] == [episode_view(t) for t in local]
    assert len({t.id for t in out}) == len(seeds)
    steps = sum(len(t.steps) for t in local)
    assert stats.episodes == len(seeds) and stats.env_steps == steps
    assert stats.worker_failures == stats.reruns == 0
    # steps are batched per call: fewer calls than steps + resets, and no engine call is empty
    assert stats.env_calls < steps + len(seeds)
    assert np.ceil(steps / config.max_batch) <= stats.engine_calls <= steps
    assert sum(stats.episodes_per_node.values()) == len(seeds)
    report = replay(load_trajectories(write_trajectories(out, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == len(seeds)


def test_engine_placement_group_with_cpu_bundle(ray_local):
    from ray.util import placement_group_table

    policy = baselines(ENV_ID)["store-all"]
    config = RolloutConfig(env_workers=1, envs_per_worker=2, placement_group=True,
                           engine_cpus=0.25)
    runner = RayRolloutRunner(ENV_ID, {"window": 2}, policy, config)
    group = runner.placement_group
    table = placement_group_table(group)
    assert table["state"] == "CREATED" and table["bundles"] == {0: {"CPU": 0.25}}
    out = runner.run([5, 6], progress=False)
    runner.shutdown()
    local = run_episodes(ENV_ID, {"window": 2}, policy(), [5, 6], progress=False)
    assert [episode_view(t) for t in out] == [episode_view(t) for t in local]
    assert placement_group_table(group)["state"] == "REMOVED"


def test_bad_input_raises_typed_errors(ray_local):
    with RayRolloutRunner(ENV_ID, {"window": 2}, baselines(ENV_ID)["noop"],
                          RolloutConfig(env_workers=1, envs_per_worker=1)) as runner:
        with pytest.raises(ConfigError, match="one group per seed"):
            runner.run([0, 1], groups=[0], progress=False)
        with pytest.raises(PolicyError, match=r"no engine\.model"):
            runner.load_state_dict({})
    with pytest.raises(ConfigError, match="empty bundle"):
        RayRolloutRunner(ENV_ID, {}, baselines(ENV_ID)["noop"],
                         RolloutConfig(placement_group=True, engine_cpus=0))


def test_cli_rollout_with_ray_address(ray_local, tmp_path):
    args = ["rollout", ENV_ID, "--policy", "mem0-like", "--episodes", "3", "-e", "window=2"]
    cli = CliRunner()
    local = cli.invoke(app, [*args, "--out", str(tmp_path / "local.parquet")])
    remote = cli.invoke(app, [*args, "--out", str(tmp_path / "ray.parquet"),
                              "--ray-address", "local", "--env-workers", "2"])
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
    config = RolloutConfig(env_workers=2, envs_per_worker=1, max_batch=1, engine_cpus=1)
    with RayRolloutRunner(ENV_ID, kwargs, functools.partial(hf_policy, "smollm2", params),
                          config) as runner:
        out = runner.run(seeds, progress=False)
    assert [episode_view(t) for t in out] == [episode_view(t) for t in local]
    assert all(t.segments and t.steps[0].completion_ids for t in out)
    for ray_traj, local_traj in zip(out, local, strict=True):
        for a, b in zip(ray_traj.steps, local_traj.steps, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
