"""A two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): env workers run on
both nodes, and a rollout survives the removal of one node mid-rollout."""

from __future__ import annotations

import os
import tempfile

import pytest

from memgym.config import RolloutConfig
from memgym.envs import baselines
from memgym.rollouts import run_episodes
from memgym.rollouts.ray_runner import RayRolloutRunner

from .conftest import episode_view

ENV_ID = "memgym/SyntheticMemoryManager-v0"
POLICY = baselines(ENV_ID)["oracle"]
SEEDS = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 80_000_000, "num_cpus": 1}


@pytest.fixture(scope="module")
def cluster():
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:
        root = tempfile.mkdtemp(prefix="memgym-ray-")
        patch.setenv("RAY_TMPDIR", root)  # Ray's session files and its address file
        # ray.init(address=...) rewrites 127.0.0.1 to the machine's routable IP, which the
        # loopback-bound nodes do not listen on; Ray's own single-host mode (the switch is
        # read once at import, hence the attribute) keeps the address on loopback.
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        os.makedirs(os.path.join(root, "ray"))
        cluster = Cluster(initialize_head=True,
                          head_node_args={**NODE, "include_dashboard": False})
        second = cluster.add_node(**NODE, resources={"node2": 1})
        ray.init(address=cluster.address)
        yield cluster, second
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def expected():
    return [episode_view(t) for t in run_episodes(ENV_ID, {}, POLICY(), SEEDS, progress=False)]


def test_work_on_both_nodes_and_survives_node_removal(cluster, expected):
    cluster, second = cluster
    head_id, second_id = cluster.head_node.node_id, second.node_id
    config = RolloutConfig(env_workers=2, envs_per_worker=2, engine_cpus=0.25)
    with RayRolloutRunner(ENV_ID, {}, POLICY, config) as runner:
        out = runner.run(SEEDS, progress=False)
        assert [episode_view(t) for t in out] == expected
        assert set(runner.stats.episodes_per_node) == {head_id, second_id}  # SPREAD

        removed = []

        def remove_second_node(stats) -> None:
            if not removed and stats.env_steps >= 8:
                cluster.remove_node(second)
                removed.append(stats.env_steps)

        out = runner.run(SEEDS, progress=False, on_progress=remove_second_node)
        assert removed and runner.stats.worker_failures >= 1 and runner.stats.reruns >= 1
        # every requested (seed, rollout index) exactly once, as without the failure
        assert [episode_view(t) for t in out] == expected
        assert len({t.id for t in out}) == len(SEEDS)
        assert head_id in runner.stats.episodes_per_node  # the restarted worker took over
