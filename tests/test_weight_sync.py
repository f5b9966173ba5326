"""Weight sync over a torch.distributed group of its own (gloo): exact tensors, Ray actors."""

from __future__ import annotations

import functools
import threading

import pytest
import torch

from memgym.config import ModelConfig, RolloutConfig
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError, EngineError, PolicyError
from memgym.rollouts.engines import engine_policy
from memgym.rollouts.ray_runner import RayRolloutRunner
from memgym.rollouts.weight_sync import WeightBroadcaster, WeightReceiver

from .conftest import ENV_ID, episode_view


def receive_in_threads(sender: WeightBroadcaster, engines: int, syncs: int
                       ) -> tuple[list[list[dict]], list[threading.Thread]]:
    """``engines`` receivers in threads join ``sender``'s group and take ``syncs`` syncs each;
    returns what each received per sync (filled as the caller broadcasts) and the threads."""
    got: list[list[dict]] = [[] for _ in range(engines)]

    def engine(rank: int) -> None:
        receiver = WeightReceiver(*sender.address, rank, sender.size)
        for _ in range(syncs):
            got[rank - 1].append(dict(receiver.receive()))
        receiver.close()

    threads = [threading.Thread(target=engine, args=(rank,)) for rank in range(1, engines + 1)]
    for thread in threads:
        thread.start()
    sender.connect()
    return got, threads


def test_receivers_get_exactly_the_sent_tensors():
    sender = WeightBroadcaster(2)
    got, threads = receive_in_threads(sender, 2, syncs=2)
    first = {"w": torch.randn(5, 3), "half": torch.randn(4, dtype=torch.bfloat16),
             "ids": torch.arange(6).view(2, 3), "t": torch.randn(3, 4).t(),  # non-contiguous
             "empty": torch.empty(0, 2), "scalar": torch.tensor(2.5, dtype=torch.float64)}
    second = {"w": torch.randn(5, 3)}
    assert sender.broadcast(first) == 1 and sender.broadcast(second) == 2
    for thread in threads:
        thread.join(timeout=60)
    sender.close()
    sender.close()  # idempotent
    for per_engine in got:
        for sent, received in zip([first, second], per_engine, strict=True):
            assert list(received) == list(sent)
            for name, tensor in sent.items():
                assert received[name].dtype == tensor.dtype
                assert torch.equal(received[name], tensor), name
    with pytest.raises(EngineError, match="before connect"):
        sender.broadcast(second)


def test_bad_input_raises_typed_errors():
    with pytest.raises(ConfigError, match="backend"):
        WeightBroadcaster(1, backend="mpi")
    with pytest.raises(ConfigError, match="at least one engine"):
        WeightBroadcaster(0)
    with pytest.raises(ConfigError, match="rank"):
        WeightReceiver("127.0.0.1", 1, 0, 2)
    with pytest.raises(ValueError, match="nccl needs engines on GPUs"):
        RolloutConfig(weight_sync="nccl")
    sender = WeightBroadcaster(1)
    with pytest.raises(EngineError, match="before connect"):
        sender.broadcast({"w": torch.zeros(1)})
    got, threads = receive_in_threads(sender, 1, syncs=1)
    with pytest.raises(ConfigError, match="must be tensors"):
        sender.broadcast({"w": [1.0]})
    sender.broadcast({"w": torch.ones(2)})  # the group is still usable
    threads[0].join(timeout=60)
    assert torch.equal(got[0][0]["w"], torch.ones(2))
    sender.close()


def test_scripted_policy_refuses_gloo_sync_before_anyone_waits(ray_local):
    config = RolloutConfig(env_workers=1, envs_per_worker=1, engine_cpus=0.25,
                           weight_sync="gloo")
    with RayRolloutRunner(ENV_ID, {"window": 2}, baselines(ENV_ID)["mem0-like"],
                          config) as runner:
        with pytest.raises(PolicyError, match=r"no engine\.model"):
            runner.load_state_dict({"w": torch.zeros(1)})
        with pytest.raises(ConfigError, match="must be tensors"):
            runner.load_state_dict({"w": 1.0})
        assert runner.weight_sync is None


@pytest.mark.slow
def test_smollm2_ray_engine_receives_weights_over_gloo(ray_local, engine):
    """HF engine actor: a zeroed final norm sent over gloo changes the greedy actions, the
    original weights bring them back, the actor's model holds exactly the sent tensors, and a
    failed sync is followed by a working one."""
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    config = RolloutConfig(env_workers=1, envs_per_worker=1, max_batch=1, engine_cpus=1,
                           weight_sync="gloo")
    factory = functools.partial(engine_policy, RolloutConfig(), ModelConfig(), params, "smollm2")
    with RayRolloutRunner(ENV_ID, {"window": 2}, factory, config) as runner:
        out = runner.run([0], progress=False)[0]
        weights = engine.model.state_dict()
        zeroed = {**weights, "model.norm.weight": torch.zeros_like(weights["model.norm.weight"])}
        runner.load_state_dict(zeroed)
        broken = runner.run([0], progress=False)[0]
        held = ray_local.get(runner.engines[0].__ray_call__.remote(
            lambda actor: actor.policy.engine.model.state_dict()))
        assert list(held) == list(zeroed)
        assert all(torch.equal(held[name], tensor) for name, tensor in zeroed.items())
        with pytest.raises(RuntimeError, match="Missing key"):  # the actor's strict load
            runner.load_state_dict({"nope": torch.zeros(1)})
        assert runner.weight_sync is None  # a failed sync drops the group; the next forms one
        runner.load_state_dict(weights)
        again = runner.run([0], progress=False)[0]
        assert runner.weight_sync is not None and runner.weight_sync.version == 1
        sync = runner.weight_sync
    assert runner.weight_sync is None and sync.group is None  # shutdown left the group
    assert [s.action for s in broken.steps] != [s.action for s in out.steps]
    assert episode_view(again) == episode_view(out)
