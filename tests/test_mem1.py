import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgym import load_trajectories, write_trajectories
from memgym.codecs import ParseError, XmlTagsCodec
from memgym.envs import baselines
from memgym.envs.mem1 import compose, question_bank
from memgym.envs.mem1.compose import format_question, split_question
from memgym.envs.mem1.env import count_tokens, score_answers
from memgym.envs.sources import QAItem
from memgym.errors import ConfigError, ResetNeeded
from memgym.ops import Answer, Retrieve, SetState, op_from_dict, op_to_dict
from memgym.replay import replay
from memgym.rollouts import run_episodes

ENV_ID = "memgym/Mem1-v0"
codec = XmlTagsCodec()


def test_codec_decodes_the_mem1_format_leniently():
    assert codec.decode("<think> I know X </think>\n<search> capital of France </search>").ops \
        == (SetState("I know X"), Retrieve("capital of France", 3))
    assert codec.decode("prose <THINK>s</THINK> <Answer>Paris; 1901</Answer> tail").ops \
        == (SetState("s"), Answer("Paris; 1901"))
    assert codec.decode("<search>cut at the stop string").ops == (Retrieve("cut at the stop string",
                                                                           3),)
    assert codec.decode("<think><search>inside</search></think><answer>a</answer>").ops \
        == (SetState("<search>inside</search>"), Answer("a"))
    assert XmlTagsCodec(top_k=5).decode("<search>q</search>").ops == (Retrieve("q", 5),)
    assert codec.decode("<answer></answer>").ops == (Answer(""),)


@pytest.mark.parametrize(("text", "error"), [
    ("hello", ParseError(5, "expected <search> or <answer>, found neither")),
    ("<search>a</search><answer>b</answer>", ParseError(18, "expected one of <search> or "
                                                            "<answer>, got both")),
    ("<search>a</search><search>b</search>", ParseError(18, "expected one <search> block, got 2")),
    ("<think>a</think><think>b</think><search>q</search>",
     ParseError(16, "expected one <think> block, got 2")),
    ("<think>never closed <search>q</search>", ParseError(0, "unclosed <think>")),
    ("<think>s</think><search>  </search>", ParseError(16, "empty <search> query")),
])
def test_codec_errors_are_typed_values(text, error):
    result = codec.decode(text)
    assert result.ops == () and result.error == error
    assert XmlTagsCodec(require_think=True).decode("<search>q</search>").error \
        == ParseError(0, "expected a <think> block, found none")


@given(st.text(max_size=300))
def test_codec_never_raises_and_round_trips(text):
    result = codec.decode(text)
    assert result.ok == (result.error is None)
    ops = (SetState(text.replace("<", "")), Retrieve(text.replace("<", "") + "q", 3))
    assert codec.decode(codec.encode(ops)).ops == (SetState(ops[0].text.strip()),
                                                   Retrieve(ops[1].query.strip(), 3))
    assert op_from_dict(op_to_dict(ops[0])) == ops[0]


def test_splits_are_disjoint_and_compose_is_seeded():
    banks = {s: question_bank(s) for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(banks[a].nq_ids) & set(banks[b].nq_ids)
        assert not set(banks[a].hotpot_ids) & set(banks[b].hotpot_ids)
    val = banks["val"]
    assert len(val.hotpot) == 50 and len(val.nq) == 266
    task = compose(val, np.random.default_rng(3), 16, 0.5)
    assert task == compose(val, np.random.default_rng(3), 16, 0.5)
    assert len(set(task.parts)) == 16 and len(task.id.split("+")) == 16
    assert split_question(task.question) == [p.question for p in task.parts]
    assert all(s.startswith("nq:") for s in compose(val, np.random.default_rng(0), 4, 0.0)
               .id.split("+"))
    hot = compose(val, np.random.default_rng(0), 4, 1.0)
    assert all(len(p.evidence) == 2 for p in hot.parts)
    assert format_question(["a?", "b?"]) == "Answer each question, in order: (1) a?; (2) b?"


def test_em_is_summed_per_sub_answer_in_order_against_any_alias():
    parts = (QAItem("q1", ("Paris", "City of Paris")), QAItem("q2", ("1901",)))
    assert score_answers("the city of Paris ; 1901", parts) == [1.0, 1.0]
    assert score_answers("1901; Paris", parts) == [0.0, 0.0]
    assert score_answers("Paris", parts) == [1.0, 0.0]
    assert score_answers("", parts) == [0.0, 0.0]


def test_answer_step_reward_and_info():
    env = gym.make(ENV_ID, k=3).unwrapped
    _, info = env.reset(seed=5)
    gold = [a[0] for a in info["privileged"]["answers"]]
    obs, reward, term, trunc, info = env.step(
        f"<think>done</think><answer>{gold[0]}; wrong; {gold[2]}</answer>")
    assert (reward, term, trunc, obs) == (2.0, True, False, "")
    assert info["reward_terms"] == {"format": 0.0, "em": 2.0} and info["em"] == [1.0, 0.0, 1.0]
    assert info["segment_end"] == "end" and info["predictions"][1] == "wrong"


def test_context_keeps_only_question_last_state_and_last_information():
    env = gym.make(ENV_ID, k=1, hotpot_fraction=0.0).unwrapped
    obs, info = env.reset(seed=0)
    question = info["privileged"]["questions"][0]
    assert f"Question: Answer each question, in order: (1) {question}" in obs
    assert "Turn 1 of 4." in obs and "<information>\n" not in obs
    assert all(a not in obs for a in info["privileged"]["answers"][0])
    bank = env.bank
    gold = bank.passages[int(env.task.parts[0].evidence[0][1:])]
    obs, reward, *_ = env.step(f"<think>alpha memo</think><search>{gold.text[:200]}</search>")
    assert f"<think>alpha memo</think>\n<information>\nDoc 1 (Title: {gold.speaker})\n" in obs
    assert obs.count("\nDoc ") == 3 and "Turn 2 of 4." in obs and reward == 0.0
    first = obs
    obs, _, _, _, info = env.step("<think>beta memo</think><search>Eiffel Tower Paris</search>")
    assert "beta memo" in obs and "alpha memo" not in obs and gold.speaker not in obs
    assert info["segment_end"] == "overwrite"
    again = env.step("<think>alpha memo</think><search>" + gold.text[:200] + "</search>")[0]
    assert again == first.replace("Turn 2 of 4.", "Turn 4 of 4.")  # constant-size context
    obs, _, _, _, info = env.step("<search>no think</search>")
    assert info["segment_end"] == "end" and obs == ""


def test_parse_error_penalty_keeps_state_and_explains():
    env = gym.make(ENV_ID).unwrapped
    env.reset(seed=1)
    env.step("<think>keep me</think><search>nile river</search>")
    obs, reward, term, trunc, info = env.step("just prose")
    assert reward == -0.1 and info["reward_terms"] == {"format": -0.1, "em": 0.0}
    assert info["ops"] == [] and info["parse_error"]["reason"].startswith("expected <search>")
    assert "<think>keep me</think>" in obs and "Invalid action: expected <search>" in obs
    assert not (term or trunc)
    obs = env.step("<search>nile river</search>")[0]  # valid but no <think>: the state is empty
    assert "<think>" not in obs.split("Turn 4 of 6.")[1]


def test_truncation_at_max_turns_and_token_counts():
    env = gym.make(ENV_ID, max_turns=2).unwrapped
    obs, info = env.reset(seed=2)
    assert info["context_tokens"] == info["peak_context_tokens"] == count_tokens(obs)
    action = "<think>a b c</think><search>rivers of europe</search>"
    obs2, _, _, _, info = env.step(action)
    assert info["context_tokens"] == count_tokens(obs) + count_tokens(action) == \
        info["peak_context_tokens"]
    _, reward, term, trunc, info = env.step("<think>x</think><search>nile</search>")
    assert (reward, term, trunc, info["segment_end"]) == (0.0, False, True, "end")
    assert info["context_tokens"] == count_tokens(obs2) + 1  # the action is one token
    assert info["peak_context_tokens"] == max(info["context_tokens"],
                                              count_tokens(obs) + count_tokens(action))
    with pytest.raises(ResetNeeded, match="ended at step 2"):
        env.step("<answer>late</answer>")


def _trace(env, seed, actions):
    out = [env.reset(seed=seed)[0]]
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        out.append((obs, reward, term, trunc, info))
    return out


def test_determinism_snapshot_restore_and_fixed_episodes():
    actions = ["<think>s</think><search>first nobel prize physics</search>", "junk",
               "<think>t</think><search>deadpool release</search>", "<answer>a; b</answer>"]
    a = _trace(gym.make(ENV_ID).unwrapped, 7, actions)
    assert a == _trace(gym.make(ENV_ID).unwrapped, 7, actions)
    assert a[0] != _trace(gym.make(ENV_ID).unwrapped, 8, actions)[0]
    env = gym.make(ENV_ID).unwrapped
    env.reset(seed=7)
    env.step(actions[0])
    snap = env.snapshot()
    rest = [env.step(x) for x in actions[1:]]
    env.restore(snap)
    assert [env.step(x) for x in actions[1:]] == rest == a[2:]
    i1 = env.reset(seed=1, options={"episode": 5})[1]["instance"]
    assert env.reset(seed=2, options={"episode": 5})[1]["instance"] == i1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=200), st.sampled_from(
    ["<search>", "<answer>", "<think></think><search>x", "</think>", "<think>"])),
    min_size=1, max_size=8))
def test_malformed_actions_are_data_not_crashes(actions):
    env = gym.make(ENV_ID, k=1).unwrapped
    env.reset(seed=1)
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        if info["parse_error"] is not None:
            assert info["ops"] == [] and reward == -0.1
        if terminated or truncated:
            break


def test_check_env_and_bad_config():
    start = time.perf_counter()
    env = gym.make(ENV_ID, split="test")
    assert time.perf_counter() - start < 2.0  # corpora + BM25 built once, then cached
    check_env(env.unwrapped, skip_render_check=True)
    for kwargs, match in (({"k": 0}, "k must"), ({"k": 17}, "k must"), ({"split": "dev"}, "split"),
                          ({"hotpot_fraction": 1.5}, "hotpot_fraction"), ({"top_k": 0}, "top_k"),
                          ({"max_turns": 0}, "max_turns")):
        with pytest.raises(ConfigError, match=match):
            gym.make(ENV_ID, **kwargs)


def test_baselines_rank_and_replay_round_trip(tmp_path):
    means, trajs = {}, []
    for name, cls in baselines(ENV_ID).items():
        runs = run_episodes(ENV_ID, {"k": 4, "split": "val"}, cls(), range(16), progress=False)
        means[name] = float(np.mean([t.episode_return for t in runs]))
        trajs += runs[:3]
    assert list(means) == ["oracle", "search-then-answer", "noop"]
    assert means["oracle"] == 4.0 > means["search-then-answer"] > means["noop"] == 0.0
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 9


def test_oracle_answers_the_passage_alias_it_read_and_still_scores_k():
    env = gym.make(ENV_ID, split="train", k=1, hotpot_fraction=0.0, top_k=1, max_turns=2)
    oracle, shown, other = baselines(ENV_ID)["oracle"](), 0, 0
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        obs, _, _, _, info = env.step(oracle.act([obs], [info])[0].text)
        action = oracle.act([obs], [info])[0].text
        answer = XmlTagsCodec().decode(action).ops[-1].text
        passage, aliases = obs[obs.rfind("<information>\n"):], info["privileged"]["answers"][0]
        if any(a.lower() in passage.lower() for a in aliases):
            shown += 1
            other += answer != aliases[0]
            assert answer in passage  # copyable, as written
        assert env.step(action)[1] == 1.0
    assert shown >= 25 and other >= 2  # NQ: another alias or casing than the first, ~10%
