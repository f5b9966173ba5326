from functools import cache

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memgym import load_trajectories, write_trajectories
from memgym.codecs.memagent import BoxedAnswerCodec, MemoryRewriteCodec
from memgym.envs import baselines
from memgym.envs.memagent.env import NO_MEMORY, cut_memory
from memgym.envs.memagent.source import HotpotHaystackSource, chunk_spans
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance
from memgym.errors import ConfigError
from memgym.ops import Answer, Overwrite, op_from_dict, op_to_dict
from memgym.replay import replay
from memgym.rollouts import run_episodes

ID = "memgym/MemAgent-v0"
SPECIAL = ["", " \n", "\\boxed{", "\\boxed{{}", "\\boxed {a}", "Updated memory:", "x" * 100_000,
           "<memory>\ud800</memory>", '{"memory": [', "Updated memory: \\boxed{}"]
TINY = TaskInstance("tiny", (StreamItem("c0", "Lyon is a city."),
                             StreamItem("c1", "Paris is the capital of France.")),
                    (QAItem("What is the capital of France?", ("Paris",), ("c1",)),))


@cache
def _shared_env():
    return gym.make(ID).unwrapped


def tiny(**kwargs):
    env = gym.make(ID, source=FiniteSource([TINY]), **kwargs).unwrapped
    obs, info = env.reset(seed=0, options={"episode": 0})
    return env, obs, info


def test_check_env_and_registry():
    env = gym.make(ID)
    check_env(env.unwrapped, skip_render_check=True)
    assert set(baselines(ID)) == {"oracle", "keyword-keep", "noop"}
    assert next(iter(baselines(ID))) == "oracle"
    assert env.unwrapped.max_steps == 33


def test_codecs_are_lenient_and_round_trip():
    mem, box = MemoryRewriteCodec(), BoxedAnswerCodec()
    assert mem.decode("I read it.\nupdated MEMORY:\n  Paris is the capital \n").ops == (
        Overwrite("Paris is the capital"),)
    assert mem.decode("no marker at all").ops == (Overwrite("no marker at all"),)
    assert mem.decode("Updated memory:   ").error.reason == "empty memory"
    assert mem.decode(mem.encode([Overwrite("a\nb")])).ops == (Overwrite("a\nb"),)
    assert box.decode(r"\boxed{1} so \boxed{ {x} y }!").ops == (Answer("{x} y"),)
    assert box.decode(r"\boxed{}").ops == (Answer(""),)
    assert box.decode("Paris").error.reason.startswith("no \\boxed")
    assert box.decode(r"x \boxed{Par{is}").error.position == 2
    assert box.decode(box.encode([Answer("Paris")])).ops == (Answer("Paris"),)
    assert op_from_dict(op_to_dict(Overwrite("m"))) == Overwrite("m")
    with pytest.raises(TypeError):
        mem.encode([Answer("x")])


def test_chunking_and_memory_cut():
    assert chunk_spans("  aaaa bbbb cccc  ", 100) == [(2, 16)]
    text = ("word " * 60).strip()
    spans = chunk_spans(text, 100)
    assert all(e - s <= 100 and text[e - 4:e] == "word" for s, e in spans)
    assert spans[0] == (0, 99) and spans[-1][1] == len(text)
    assert chunk_spans("x" * 250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert cut_memory("a b  c d", 3) == "a b  c" and cut_memory("a b", 3) == "a b"
    assert cut_memory("y" * 50, 2) == "y" * 16


def test_haystack_source_pads_shuffles_and_locates_evidence():
    source = HotpotHaystackSource("val", context_chars=20000, chunk_chars=1500)
    inst = source.sample(np.random.default_rng(3))
    assert inst.id.endswith("p") and int(inst.id.split(":")[1][:-1]) > 10
    document = "\n\n".join(item.text for item in inst.items)
    assert 17000 < len(document) <= 20000 and len(inst.items) <= source.max_items
    assert all(len(item.text) <= 1500 for item in inst.items)
    (qa,) = inst.questions
    gold = next(q for q in source.questions if q.question == qa.question)
    assert qa.answers == (gold.answer,)
    titles = [p.title for p in gold.paragraphs if p.supporting]
    assert all(any(f"\n{t}\n" in item.text for item in inst.items if item.id in qa.evidence)
               for t in titles)
    assert inst == source.sample(np.random.default_rng(3))
    assert inst != source.sample(np.random.default_rng(4))
    with pytest.raises(ConfigError, match="unbounded"):
        source.instance(0)


def test_observations_show_question_memory_and_chunk():
    env, obs, info = tiny()
    assert "<problem>\nWhat is the capital of France?\n</problem>" in obs
    assert f"<memory>\n{NO_MEMORY}\n</memory>" in obs and "Lyon is a city." in obs
    assert obs.endswith("Updated memory:\n") and "Paris" not in obs
    assert info["phase"] == "memory" and info["privileged"] == {"answer": "Paris",
                                                                "evidence_read": False}
    obs, _, _, _, info = env.step("Updated memory: Lyon is a city")
    assert "<memory>\nLyon is a city\n</memory>" in obs and "Paris is the capital" in obs
    assert info["privileged"]["evidence_read"] and info["chunk"] == 1
    obs, _, _, _, info = env.step("Capital of France: Paris")
    assert info["phase"] == "answer" and "\\boxed{}" in obs and "<section>" not in obs
    assert "<memory>\nCapital of France: Paris\n</memory>" in obs


def test_rewards_segments_and_penalties_hand_computed():
    env, _, _ = tiny()
    _, r, term, _, info = env.step("")
    assert (r, term, info["segment_end"]) == (-0.1, False, "overwrite")
    assert info["parse_error"]["reason"] == "empty memory" and info["memory"] == NO_MEMORY
    _, r, _, _, info = env.step("Updated memory: " + "Paris " * 300)
    assert r == -0.1 and info["reward_terms"] == {"em": 0.0, "format": -0.1}
    assert info["memory"] == " ".join(["Paris"] * 256) and info["op_results"][0]["reason"]
    obs, r, term, trunc, info = env.step("It is \\boxed{the Paris.}")
    assert (obs, r, term, trunc, info["segment_end"]) == ("", 1.0, True, False, "end")
    assert info["reward_terms"] == {"em": 1.0, "format": 0.0}
    assert info["ops"] == [{"text": "the Paris.", "kind": "answer"}]

    env, _, _ = tiny(metric="f1")
    env.step("Updated memory: x")
    env.step("Updated memory: x")
    _, r, _, _, info = env.step("Paris")
    assert r == -0.1 and info["reward_terms"] == {"f1": 0.0, "format": -0.1}
    env.reset(seed=0, options={"episode": 0})
    env.step("m")
    env.step("m")
    assert env.step("\\boxed{Paris France}")[1] == pytest.approx(2 / 3)


def test_determinism_and_snapshot_restore():
    def run(seed, actions):
        env = gym.make(ID).unwrapped
        trace = [env.reset(seed=seed)]
        for action in actions:
            trace.append(env.step(action))
            if trace[-1][2]:
                break
        return trace

    actions = ["Updated memory: notes", "", "\\boxed{x}"] * 6
    a = run(5, actions)
    assert a == run(5, actions) and a[0] != run(6, actions)[0] and a[-1][2]
    env = gym.make(ID).unwrapped
    env.reset(seed=2)
    env.step("Updated memory: first")
    snap = env.snapshot()

    def finish():
        out = [env.step("second")]
        while not out[-1][2]:
            out.append(env.step("\\boxed{y}"))
        return out

    rest = finish()
    env.restore(snap)
    assert finish() == rest and len(rest) == len(env.instance.items)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=300), st.sampled_from(SPECIAL)), min_size=1,
                max_size=6))
def test_malformed_actions_are_data_not_crashes(actions):
    env = _shared_env()
    env.reset(seed=len(actions))
    for action in actions:
        obs, reward, term, _, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert reward == sum(info["reward_terms"].values())
        if info["parse_error"] is not None:
            assert info["reward_terms"]["format"] == -0.1 and info["ops"] == []
        if term:
            break


def test_bad_config_is_a_typed_error():
    for kwargs, match in (({"metric": "bleu"}, "metric"), ({"split": "dev"}, "split"),
                          ({"chunk_chars": 10}, "chunk_chars"),
                          ({"max_memory_tokens": 0}, "max_memory_tokens"),
                          ({"max_chunks": 3}, "max_chunks")):
        with pytest.raises(ConfigError, match=match):
            gym.make(ID, **kwargs)


def test_baselines_rank_and_replay_exactly(tmp_path):
    means, trajs = {}, []
    for name, cls in baselines(ID).items():
        runs = run_episodes(ID, {}, cls(), range(32), progress=False)
        means[name] = sum(t.episode_return for t in runs) / len(runs)
        trajs += runs[:4]
    assert means["oracle"] == 1.0 > means["keyword-keep"] > means["noop"] == 0.0
    report = replay(load_trajectories(write_trajectories(trajs, tmp_path / "t.parquet")))
    assert report.ok and report.trajectories == 12
    assert all(s.segment_end == ("end" if s.terminated else "overwrite")
               for t in trajs for s in t.steps)


def test_custom_source_limits_are_typed_errors():
    long_item = TaskInstance("long", (StreamItem("c0", "x" * 9000),), TINY.questions)
    env = gym.make(ID, source=FiniteSource([long_item])).unwrapped
    with pytest.raises(ConfigError, match="8192 chars"):
        env.reset(options={"episode": 0})
    with pytest.raises(ConfigError, match="unbounded"):
        gym.make(ID).unwrapped.reset(options={"episode": 0})
