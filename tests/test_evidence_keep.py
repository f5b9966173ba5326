"""The ``evidence-keep`` teacher of the memory manager (the quickstart's warm start): it fills a
bounded bank, then swaps a memory that is not evidence for an evidence turn; the env's
privileged ``bank_full`` / ``evidence_shown`` it reads."""

import re

import gymnasium as gym
import numpy as np
import pytest

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.envs import baselines
from memgym.rollouts.runner import run_episodes

ENV_ID = "memgym/LoCoMoMemoryManager-v1"
KWARGS = {"split": "val", "window": 6, "max_entries": 2, "related_k": 3}
SHOWN = re.compile(r"^\[(\w+)\] ", re.MULTILINE)


def walk(env, policy, seeds):
    """Step ``env`` with ``policy`` over one episode per seed; yield each step's observation,
    info (with ``privileged``, which trajectories do not record) and action, before the step."""
    for seed in seeds:
        observation, info = env.reset(seed=seed)
        terminated = False
        while not terminated:
            (action,) = policy.act([observation], [info])
            yield observation, info, action
            observation, _, terminated, _, info = env.step(action.text)


def test_privileged_info_names_the_evidence_memories_shown_and_a_full_bank():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    store_all = baselines(ENV_ID)["store-all"]()
    checked = 0
    for observation, info, _ in walk(env, store_all, range(6)):
        evidence = {e for q in env.instance.questions if q.answers for e in q.evidence}
        privileged = info["privileged"]
        shown = SHOWN.findall(observation.split("Related memories:")[-1])
        assert privileged["bank_full"] == (len(env.bank) == 2)
        assert privileged["evidence_shown"] == [
            mid for mid in shown if env.bank.get(mid).provenance in evidence]
        checked += bool(privileged["evidence_shown"])
    assert checked  # some steps show an evidence memory


def test_evidence_keep_fills_the_bank_then_swaps_only_weak_memories_for_evidence():
    seeds = list(range(1_000_000, 1_000_048))
    keep = run_episodes(ENV_ID, KWARGS, baselines(ENV_ID)["evidence-keep"](), seeds,
                        num_envs=24, progress=False)
    store = run_episodes(ENV_ID, KWARGS, baselines(ENV_ID)["store-all"](), seeds, num_envs=24,
                         progress=False)
    for trajectory in keep:
        kinds = [[op["kind"] for op in s.ops] for s in trajectory.steps]
        assert kinds[:2] == [["add"], ["add"]]  # the first two turns fill the bank
        assert all(k in ([], ["update"]) for k in kinds[2:])
    updates = sum(op["kind"] == "update" for t in keep for s in t.steps for op in s.ops)
    assert 24 <= updates <= 96  # about one swap per episode on these seeds
    keep_mean = np.mean([t.episode_return for t in keep])
    store_mean = np.mean([t.episode_return for t in store])
    assert keep_mean == pytest.approx(0.7495, abs=1e-4)  # store-all keeps the first two turns
    assert store_mean == pytest.approx(0.5460, abs=1e-4)


def test_evidence_keep_swaps_on_evidence_turns_only_and_never_an_evidence_memory():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    teacher = baselines(ENV_ID)["evidence-keep"]()
    for _, info, action in walk(env, teacher, range(1_000_000, 1_000_024)):
        ops = env.codec.decode(action.text).ops
        privileged = info["privileged"]
        if privileged["bank_full"] and ops:
            (update,) = ops
            assert privileged["evidence"]
            assert update.id not in privileged["evidence_shown"]


def test_evidence_keep_reads_gold_data_so_it_is_never_the_reference_heuristic():
    assert baselines(ENV_ID)["evidence-keep"].privileged  # pair_with_best_heuristic skips it
