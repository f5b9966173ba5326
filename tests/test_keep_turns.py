"""``memgym/LoCoMoMemoryManager-v2`` (``keep_turns``): ADD / UPDATE without text store the new
turn as said, the observation shows the bank's fill and a small bank whole; the codec's
``default_text``; the ``keep-longest`` rule and the ``evidence-longest`` teacher."""

import re

import gymnasium as gym
import numpy as np
import pytest

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.codecs import Mem0JsonCodec
from memgym.envs import baselines
from memgym.ops import Add, Noop, Update
from memgym.report import EvalResult, pair_with_best_heuristic
from memgym.rollouts.runner import run_episodes

ENV_ID = "memgym/LoCoMoMemoryManager-v2"
KWARGS = {"split": "val", "window": 6, "max_entries": 2, "related_k": 3}
SHOWN = re.compile(r"^\[(\w+)\] (.*)$", re.MULTILINE)
SEEDS = list(range(1_000_000, 1_000_048))  # memgym train's validation seeds


def test_codec_default_text_fills_a_missing_text_and_is_left_out_when_encoding():
    codec = Mem0JsonCodec("Jon: I lost my job.")
    parsed = codec.decode('{"memory": [{"event": "ADD"}, {"event": "UPDATE", "id": 3}]}')
    assert parsed.ops == (Add("Jon: I lost my job."), Update("3", "Jon: I lost my job."))
    ops = [Add("Jon: I lost my job."), Update("1", "other"), Noop()]
    text = codec.encode(ops)
    assert text == ('{"memory": [{"event": "ADD"}, {"id": "1", "event": "UPDATE", "text": '
                    '"other"}, {"event": "NONE"}]}')
    assert codec.decode(text).ops == tuple(ops)
    # without a default (Mem0's rule, -v0 / -v1) a missing text is a parse error
    assert "needs a string 'text'" in Mem0JsonCodec().decode('[{"event": "ADD"}]').error.reason
    assert Mem0JsonCodec().encode([Add("x")]) == '{"memory": [{"event": "ADD", "text": "x"}]}'


def test_v2_shows_the_fill_and_the_whole_small_bank_where_bm25_would_not():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    store_all = baselines(ENV_ID)["store-all"]()
    hidden = 0  # steps where BM25 alone would hide a memory (it shares no term with the turn)
    for seed in range(8):
        observation, info = env.reset(seed=seed)
        terminated = False
        while not terminated:
            assert f"Memory bank: {len(env.bank)} of 2 memories\n" in observation
            shown = SHOWN.findall(observation.split("Related memories:")[-1])
            assert sorted(shown) == sorted((e.id, e.text) for e in env.bank)
            turn = info["turn"]
            hidden += len(env.bank.search(f"{turn['speaker']} {turn['text']}", 3)) < len(env.bank)
            (action,) = store_all.act([observation], [info])
            assert action.text == '{"memory": [{"event": "ADD"}]}'  # the turn as said: no text
            observation, _, terminated, _, info = env.step(action.text)
    assert hidden > 0


def test_v2_add_and_update_without_text_store_the_turn_as_said():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    _, info = env.reset(seed=3)
    turns = []
    for step in range(4):
        turns.append(info["turn"]["as_memory"])
        assert turns[-1] == f"{info['turn']['speaker']}: {info['turn']['text']}"
        action = ('{"memory": [{"event": "ADD"}]}' if step < 3
                  else '{"memory": [{"event": "UPDATE", "id": "0"}]}')
        _, reward, _, _, info = env.step(action)
        assert reward == 0.0 and info["parse_error"] is None
    # two ADDs fill the bank, the third is rejected, the UPDATE swaps memory 0 for turn 4
    assert [r["applied"] for r in info["op_results"]] == [True]
    assert [e.text for e in env.bank] == [turns[3], turns[1]]


def test_v1_observations_and_actions_are_unchanged():
    v1 = gym.make("memgym/LoCoMoMemoryManager-v1", **KWARGS).unwrapped
    v2 = gym.make(ENV_ID, **KWARGS).unwrapped
    observation, info = v1.reset(seed=3)
    observation_v2, _ = v2.reset(seed=3)
    assert "Memory bank:" not in observation and "as_memory" not in info["turn"]
    assert observation.split("\nDate:")[1] == observation_v2.split("\nDate:")[1].replace(
        "Memory bank: 0 of 2 memories\n", "")
    _, reward, _, _, info = v1.step('{"memory": [{"event": "ADD"}]}')  # a text is required
    assert info["parse_error"] is not None and reward == -0.1


def test_keep_longest_keeps_the_longest_turns_and_is_the_reference_heuristic():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    policy = baselines(ENV_ID)["keep-longest"]()
    longest = []
    for seed in SEEDS[:8]:
        observation, info = env.reset(seed=seed)
        words, terminated = [], False
        while not terminated:
            (action,) = policy.act([observation], [info])
            words.append((len(info["turn"]["as_memory"].split()), info["turn"]["as_memory"]))
            observation, _, terminated, _, info = env.step(action.text)
        # the kept turns are the two longest (ties: the earlier turn stays)
        kept = sorted(len(e.text.split()) for e in env.bank)
        longest.append(kept == sorted(n for n, _ in words)[-2:])
    assert all(longest)
    runs = run_episodes(ENV_ID, KWARGS, policy, SEEDS, num_envs=24, progress=False)
    assert np.mean([t.episode_return for t in runs]) == pytest.approx(0.6532, abs=1e-4)
    assert "keep-longest" not in baselines("memgym/LoCoMoMemoryManager-v1")


def test_evidence_longest_keeps_evidence_first_then_the_longest_and_is_never_the_reference():
    env = gym.make(ENV_ID, **KWARGS).unwrapped
    policy = baselines(ENV_ID)["evidence-longest"]()
    for seed in SEEDS[:8]:
        observation, info = env.reset(seed=seed)
        ranks, evidence, terminated = [], set(), False
        while not terminated:
            (action,) = policy.act([observation], [info])
            turn = info["turn"]["as_memory"]
            if info["privileged"]["evidence"]:
                evidence.add(turn)
            ranks.append((info["privileged"]["evidence"], len(turn.split())))
            observation, _, terminated, _, info = env.step(action.text)
        # the bank keeps the two turns ranked highest by (evidence, words)
        kept = sorted((e.text in evidence, len(e.text.split())) for e in env.bank)
        assert kept == sorted(ranks)[-2:]
    runs = run_episodes(ENV_ID, KWARGS, policy, SEEDS, num_envs=24, progress=False)
    assert np.mean([t.episode_return for t in runs]) == pytest.approx(0.7760, abs=1e-4)
    results = [EvalResult(name, mean, 0.0, 1, 0.0, returns=[mean], seeds=[0])
               for name, mean in (("evidence-longest", 0.776), ("keep-longest", 0.653))]
    assert pair_with_best_heuristic(results, baselines(ENV_ID)).policy == "keep-longest"
