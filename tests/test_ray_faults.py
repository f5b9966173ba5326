"""Fault tolerance of the Ray runner (a killed env worker or engine actor mid-rollout) and
atomic trajectory files; real Ray, real envs."""

from __future__ import annotations

import os
import threading
import time

import pyarrow.parquet as pq
import pytest

from memgym import load_trajectories, write_trajectories
from memgym.config import RolloutConfig
from memgym.envs import baselines
from memgym.errors import RolloutError
from memgym.rollouts import run_episodes
from memgym.rollouts.ray_runner import RayRolloutRunner

from .conftest import episode_view

ENV_ID = "memgym/SyntheticMemoryManager-v0"  # its oracle reads info["privileged"]
POLICY = baselines(ENV_ID)["oracle"]
SEEDS = [0, 1, 2, 3, 4, 5, 0, 1]  # (seed, rollout index) pairs: seeds 0 and 1 run twice


@pytest.fixture(scope="module")
def expected():
    return [episode_view(t) for t in run_episodes(ENV_ID, {}, POLICY(), SEEDS, progress=False)]


@pytest.fixture(scope="module")
def runner(ray_local):
    runner = RayRolloutRunner(ENV_ID, {}, POLICY, RolloutConfig(env_workers=2, envs_per_worker=2))
    yield runner
    runner.shutdown()


def _pid(actor) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)


def _kill_after(actor, steps: int, restarts: bool = True):
    """An ``on_progress`` hook that kills ``actor`` once ``steps`` env steps are done, i.e.
    mid-rollout, and, when the actor ``restarts``, returns once a restarted process answers
    (``ray.kill`` is asynchronous). Returns the hook and the list of (pid before, pid after) it
    fills (pid after: None when the actor does not restart)."""
    import ray
    from ray.exceptions import RayActorError

    killed: list[tuple[int, int]] = []

    def hook(stats) -> None:
        if killed or stats.env_steps < steps:
            return
        before = after = _pid(actor)
        ray.kill(actor, no_restart=False)
        if not restarts:  # nothing will answer: waiting for a new pid would last the deadline
            killed.append((before, None))
            return
        deadline = time.monotonic() + 60
        while after == before and time.monotonic() < deadline:
            try:
                after = _pid(actor)
            except RayActorError:  # still restarting
                time.sleep(0.1)
        killed.append((before, after))

    return hook, killed


def test_killed_env_worker_reruns_its_episodes_from_their_seeds(runner, expected):
    hook, killed = _kill_after(runner.workers[0], steps=6)
    out = runner.run(SEEDS, progress=False, on_progress=hook)
    assert killed and killed[0][0] != killed[0][1]  # a new process took over mid-rollout
    assert runner.stats.worker_failures >= 1 and runner.stats.reruns >= 1
    assert runner.stats.env_steps >= sum(len(v[6]) for v in expected)
    # every requested (seed, rollout index) exactly once, equal to the undisturbed run
    assert [episode_view(t) for t in out] == expected
    assert len({t.id for t in out}) == len(SEEDS)


def test_killed_engine_actor_is_restarted_and_nothing_is_lost(runner, expected):
    hook, killed = _kill_after(runner.engines[0], steps=5)
    out = runner.run(SEEDS, progress=False, on_progress=hook)
    assert killed and killed[0][0] != killed[0][1]
    assert [episode_view(t) for t in out] == expected
    assert runner.stats.worker_failures == 0  # the envs kept their state and waited


def test_worker_failing_more_than_max_restarts_raises(ray_local):
    config = RolloutConfig(env_workers=1, envs_per_worker=1, max_restarts=0)
    with RayRolloutRunner(ENV_ID, {}, POLICY, config) as runner:
        hook, killed = _kill_after(runner.workers[0], steps=1, restarts=False)
        with pytest.raises(RolloutError, match="more than 0 times"):
            runner.run(SEEDS[:3], progress=False, on_progress=hook)
        assert killed  # the worker died mid-rollout


def test_trajectory_file_is_never_seen_partial(tmp_path):
    """Readers polling the file while it is rewritten see the old or the new file, whole."""
    trajs = run_episodes(ENV_ID, {}, POLICY(), SEEDS, progress=False)
    path = tmp_path / "t.parquet"
    sizes = {len(load_trajectories(write_trajectories(part, path)))
             for part in (trajs[:2], trajs)}
    stop, seen, errors = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(pq.read_metadata(path).num_rows)
            except OSError as exc:  # a partial Parquet file fails here
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        write_trajectories(trajs[: 2 + (i % 2) * 6], path)
    stop.set()
    reader.join()
    assert seen and not errors and set(seen) <= sizes
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left
