import functools
import json
import math

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgym import load_trajectories, write_trajectories
from memgym.codecs import RankingCodec
from memgym.envs import baselines
from memgym.envs.answerers import Answered
from memgym.envs.memsifter import MemSifterEnv, fibonacci_tiers, tier_weights
from memgym.errors import ConfigError
from memgym.ops import EditContext, Rank, op_from_dict, op_to_dict
from memgym.replay import replay
from memgym.rollouts import run_episodes

ENV_ID = "memgym/MemSifter-v0"
codec = RankingCodec()


class EvidenceAnswerer:
    """Stub working model: 1.0 when the bank holds a turn of ``evidence``, 0.25 with an empty
    bank (a model that knows a little without memory), else 0.0."""

    name = "stub"

    def __init__(self, evidence):
        self.evidence = set(evidence)

    def answer(self, questions, bank):
        hit = any(e.provenance in self.evidence for e in bank)
        score = 1.0 if hit else 0.25 if len(bank) == 0 else 0.0
        return [Answered(q.question, q.answers[0], "", score) for q in questions]


def test_check_env_and_registry():
    env = gym.make(ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    assert set(baselines(ENV_ID)) == {"oracle", "bm25", "recency", "noop"}
    assert next(iter(baselines(ENV_ID))) == "oracle"


def test_tiers_and_weights_follow_memsifter():
    assert fibonacci_tiers(1) == (1,) and fibonacci_tiers(2) == (1, 2)
    assert fibonacci_tiers(10) == (1, 2, 3, 5, 8) and fibonacci_tiers(13)[-1] == 13
    c = [1 / math.log2(f + 1) for f in (1, 2, 3, 5, 8)]
    assert tier_weights((1, 2, 3, 5, 8)) == pytest.approx(
        [c[0] - c[1], c[1] - c[2], c[2] - c[3], c[3] - c[4], c[4]])
    assert sum(tier_weights((1, 2, 3, 5, 8))) == pytest.approx(1.0)


def test_observation_shows_question_and_candidates_not_gold():
    env = MemSifterEnv()
    obs, info = env.reset(seed=0, options={"episode": 0})
    qa = env.qa
    assert qa.question == "When did Caroline go to the LGBTQ support group?"
    assert f"Question: {qa.question}" in obs and "<ranking>" in obs
    assert [line[:4] for line in obs.splitlines() if line.startswith("[")] == [
        f"[{i}] " for i in range(10)]
    assert len(info["candidates"]) == 10 and len(obs) <= env.observation_space.max_length <= 6000
    # evidence D1:3 is in session 1; the gold answer is only in privileged info
    (ev,) = info["privileged"]["evidence_sessions"]
    assert info["candidates"][ev]["session"] == 1 and info["privileged"]["answer"] == "7 May 2023"
    assert "7 May 2023" not in obs and "[0] 1:56 pm on 8 May, 2023 | keywords: " in obs
    assert [c["session"] for c in info["candidates"]] == sorted(
        c["session"] for c in info["candidates"])
    everything = MemSifterEnv(num_candidates=None)
    obs, info = everything.reset(seed=0)
    assert len(info["candidates"]) == 19 and len(obs) <= everything.observation_space.max_length


def test_reward_is_dcg_weighted_gain_over_no_memory():
    env = MemSifterEnv(num_candidates=4)
    _, info = env.reset(seed=5, options={"episode": 0})
    env.answerer = EvidenceAnswerer({"D1:3"})
    (ev,) = info["privileged"]["evidence_sessions"]
    other = [i for i in range(4) if i != ev]
    # tiers (1, 2, 3); the evidence at rank 2 counts from tier 2 on: Σ w·(s − s0) = C(2) − s0
    _, reward, term, trunc, info = env.step(codec.encode([Rank((other[0], ev, other[1]))]))
    assert info["tiers"] == {1: 0.0, 2: 1.0, 3: 1.0} and info["score_0"] == 0.25
    assert reward == pytest.approx(1 / math.log2(3) - 0.25)
    assert info["reward_terms"] == {"format": 0.0, "gain": pytest.approx(reward)}
    assert (term, trunc, info["segment_end"]) == (True, False, "end")
    assert info["ops"] == [{"order": [other[0], ev, other[1]], "kind": "rank"}]
    env.reset(seed=5, options={"episode": 0})
    assert env.step(f"<think>first</think><ranking>{ev}</ranking>")[1] == pytest.approx(0.75)
    env.reset(seed=5, options={"episode": 0})
    assert env.step("<ranking></ranking>")[1] == 0.0  # no memory: no gain


def test_recall_answerer_gain_equals_f1_of_best_turn():
    env = MemSifterEnv()
    _, info = env.reset(seed=0)
    assert info["privileged"]["answer"] == "Brave by Sara Bareilles"
    (ev,) = info["privileged"]["evidence_sessions"]
    _, reward, _, _, info = env.step(f"<ranking>{ev}</ranking>")
    # a single ranked session: every tier sees it, the weights sum to 1, RecallAnswerer s0 = 0
    assert info["score_0"] == 0.0 and set(info["tiers"].values()) == {reward}
    # the best of the top-5 BM25 turns is D15:23, 37 tokens holding the 4 gold tokens
    assert reward == pytest.approx(2 * 4 / (37 + 4))


def test_format_penalties_and_dropped_indices():
    env = MemSifterEnv()
    for action in ("garbage", "<ranking>1,2", "<ranking>1, two</ranking>", "<ranking>-1</ranking>"):
        env.reset(seed=1)
        _, reward, term, _, info = env.step(action)
        assert term and reward == -0.1 and info["parse_error"] is not None
        assert info["ops"] == [] and info["reward_terms"] == {"format": -0.1, "gain": 0.0}
    _, info = env.reset(seed=1)
    (ev,) = info["privileged"]["evidence_sessions"]
    clean_reward = env.step(f"<ranking>{ev}</ranking>")[1]
    env.reset(seed=1)
    _, reward, _, _, info = env.step(f"<ranking>{ev},{ev},99</ranking>")
    assert info["ranking"] == [ev] and info["dropped"] == [ev, 99]
    assert reward == pytest.approx(clean_reward - 0.1)
    assert info["op_results"][0]["applied"] is False and "99" in info["op_results"][0]["reason"]


def test_codec_is_lenient_and_roundtrips():
    assert codec.decode("<think>hmm <ranking>9</ranking></think> <RANKING> [3, 1 4,] </ranking>"
                        ).ops == (Rank((3, 1, 4)),)
    assert codec.decode("<ranking></ranking>").ops == (Rank(()),)
    assert codec.decode("no tags").error.position == 0
    assert codec.decode("x <ranking>1,2").error.reason.startswith("<ranking> is not closed")
    assert codec.decode("<ranking>1,b</ranking>").error.position == 11
    assert codec.decode("<ranking>" + "9" * 5000 + "</ranking>").error is not None
    with pytest.raises(TypeError):
        codec.encode([])
    for op in (Rank((3, 0, 7)), EditContext(("a1", "b2"), "s")):
        assert op_from_dict(json.loads(json.dumps(op_to_dict(op)))) == op


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10**9 - 1), max_size=20))
def test_codec_roundtrip_property(order):
    assert codec.decode(codec.encode([Rank(tuple(order))])).ops == (Rank(tuple(order)),)


@functools.cache
def _shared_env():
    return MemSifterEnv()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300),
                 st.builds(lambda s: f"<ranking>{s}</ranking>", st.text(max_size=40))))
def test_malformed_actions_are_data_not_crashes(action):
    env = _shared_env()
    env.reset(seed=2)
    _, reward, term, _, info = env.step(action)
    assert term and reward == pytest.approx(sum(info["reward_terms"].values()))
    if info["parse_error"] is not None:
        assert info["reward_terms"]["format"] == -0.1 and info["ops"] == []


def test_determinism_and_snapshot_restore():
    a, b = MemSifterEnv(), MemSifterEnv()
    obs_a, info_a = a.reset(seed=7)
    assert (obs_a, info_a) == b.reset(seed=7)
    assert a.reset(seed=8)[0] != obs_a
    a.reset(seed=7)
    snap = a.snapshot()
    first = a.step("<ranking>3,1,0</ranking>")
    a.reset(seed=11)
    a.restore(snap)
    assert a.step("<ranking>3,1,0</ranking>") == first == b.step("<ranking>3,1,0</ranking>")


def test_config_errors():
    for kwargs in ({"split": "dev"}, {"num_candidates": 0}, {"answerer": "llm"},
                   {"max_rank": 0}, {"preview_chars": -1}):
        with pytest.raises(ConfigError):
            MemSifterEnv(**kwargs)
    with pytest.raises(ConfigError):
        MemSifterEnv().reset(options={"episode": 10**6})


def test_baselines_rank_and_replay_exactly(tmp_path):
    means, trajs = {}, []
    for name, cls in baselines(ENV_ID).items():
        runs = run_episodes(ENV_ID, {"split": "val"}, cls(), range(32), progress=False)
        means[name] = sum(t.episode_return for t in runs) / len(runs)
        trajs += runs[:3]
    assert means["oracle"] > means["bm25"] > means["recency"] > means["noop"] == 0.0
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 12 and report.steps == 12
