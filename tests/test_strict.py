"""The ``-v1`` ids of MEM1, MemAgent, MemAct, MemSifter and Mem-α (issue 18): strict format
rules for reward, instructions without a placeholder to copy, and scripted baselines that pass
them (the memory manager's ``-v1`` ids are tested in ``tests/test_codec_strict.py``)."""

import json
import re
import warnings

import gymnasium as gym
import pytest

from memgym.codecs import CutAction
from memgym.engine import Completion
from memgym.envs import ENVS, baselines
from memgym.rollouts.runner import run_episodes

FAMILIES = ("Mem1", "MemAgent", "MemAct", "MemSifter", "MemAlpha")
SEEDS = (0, 1, 2)
PENALTY = 0.1  # every family's default format_penalty
TRAILING = "\nand some more text"
# the tags each family's format shows; any other <...> in its instructions is a placeholder
TAGS = {"Mem1": {"<think>", "</think>", "<search>", "</search>", "<answer>", "</answer>",
                 "<information>"},
        "MemAgent": {"<problem>", "</problem>", "<memory>", "</memory>", "<section>",
                     "</section>"},
        "MemAct": {"<tool_call>"}, "MemSifter": {"<ranking>"}, "MemAlpha": {"<tool_call>"}}
# what the -v0 instructions show as the content to write
V0_PLACEHOLDERS = {"Mem1": ["<think>...</think>", "<search>query</search>", "answer 1; answer 2"],
                   "MemAgent": [],
                   "MemAct": ["<keywords>", "<key facts so far>", '"<id>"', "<answer>",
                              "<|tool id=ID|>"],
                   "MemSifter": ["i,j,k", "..."], "MemAlpha": ['"..."']}


@pytest.fixture(autouse=True)
def _quiet_v0_deprecation():
    with warnings.catch_warnings():  # gymnasium warns that a -v0 id has a -v1
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _make(family, version):
    return gym.make(f"memgym/{family}-{version}").unwrapped


def _instructions(env):
    """The fixed instruction texts the env shows (MemAgent: both prompts' templates)."""
    if hasattr(env, "answer_prompt"):
        return [env._instructions(answer=False), env._instructions(answer=True)]
    return [env.instructions]


def test_the_v1_ids_are_registered_with_strict_rules():
    for family in FAMILIES:
        v0, v1 = ENVS[f"memgym/{family}-v0"], ENVS[f"memgym/{family}-v1"]
        assert v1.entry_point == v0.entry_point and v1.baselines == v0.baselines
        extra = {"strict": True, **({"answerer": "span"} if family in ("MemSifter", "MemAlpha")
                                    else {})}
        assert v1.kwargs == {**v0.kwargs, **extra}
        assert _make(family, "v1").strict and not _make(family, "v0").strict


# ------------------------------------------------------------------ (a) baselines pass strict
def _episodes(family, version, name):
    policy = baselines(f"memgym/{family}-{version}")[name]()
    return run_episodes(f"memgym/{family}-{version}", {}, policy, SEEDS, progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_baselines_make_no_format_error_in_v1_and_score_as_in_v0(family):
    """Same actions, no parse error, same reward terms; MemSifter's and Mem-α's v1 answerer
    scores the best answer span of each memory (``answerer="span"``), which is at least the
    whole memory's token F1, so their answer terms are >= v0's and the others equal."""
    for name in baselines(f"memgym/{family}-v1"):
        old, new = _episodes(family, "v0", name), _episodes(family, "v1", name)
        assert [len(t.steps) for t in old] == [len(t.steps) for t in new], name
        for a, b in ((a, b) for s, t in zip(old, new, strict=True)
                     for a, b in zip(s.steps, t.steps, strict=True)):
            assert a.action == b.action and b.parse_error is None, (name, b.parse_error)
            assert b.reward_terms["format"] == a.reward_terms["format"] == 0.0, name
            if family == "MemSifter":
                assert b.reward_terms["gain"] >= a.reward_terms["gain"] - 1e-9, name
            elif family == "MemAlpha":
                assert b.reward_terms["accuracy"] >= a.reward_terms["accuracy"] - 1e-9, name
                assert {k: v for k, v in b.reward_terms.items() if k != "accuracy"} == \
                    {k: v for k, v in a.reward_terms.items() if k != "accuracy"}, name
            else:
                assert b.reward_terms == a.reward_terms, name


def test_the_span_answerer_lifts_the_oracles_of_memsifter_and_mem_alpha():
    for family, term in (("MemSifter", "gain"), ("MemAlpha", "accuracy")):
        returns = {v: sum(s.reward_terms[term] for t in _episodes(family, v, "oracle")
                          for s in t.steps) for v in ("v0", "v1")}
        assert returns["v1"] > returns["v0"] > 0, family


# --------------------------------------------------------- (b) strict errors only in v1
def _at_answer_step(env):
    """Step a MemAgent env through its chunks with the oracle, to the answer step."""
    obs, info = env.reset(seed=0)
    oracle = baselines("memgym/MemAgent-v1")["oracle"]()
    while info["phase"] == "memory":
        obs, _, _, _, info = env.step(oracle.act([obs], [info])[0].text)
    return obs, info


def _first_action(family, obs, info):
    return baselines(f"memgym/{family}-v1")["oracle"]().act([obs], [info])[0].text


# family → (v0 action copying a v0 placeholder, v1 action copying v1 instruction text, the op
# field the v1 copy names); MemAgent shows no placeholder: its copy is of prompt text
COPIES = {
    "Mem1": ("<think>x</think>\n<answer>answer 1; answer 2</answer>",
             "<think>x</think>\n<search>search engine over Wikipedia passages</search>",
             "Retrieve.query"),
    "MemAct": ('<tool_call>{"name": "search", "arguments": {"query": "<keywords>", "topk": 3}}'
               "</tool_call>",
               '<tool_call>{"name": "search", "arguments": {"query": "search keywords of your '
               'own", "topk": 3}}</tool_call>', "Retrieve.query"),
    "MemAgent": ("Updated memory:\nkeep every relevant detail of the previous memory",
                 "Updated memory:\nkeep every relevant detail of the previous memory",
                 "Overwrite.text"),
    "MemAlpha": ('<tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": '
                 '"semantic", "content": "..."}}</tool_call>',
                 '<tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": '
                 '"semantic", "content": "what to remember, taken from the chunk"}}</tool_call>',
                 "MemoryInsert.content"),
}


def _copied_text(action):
    """The op text a COPIES action copies (the content of its last tag / string / line)."""
    if action.startswith("<tool_call>"):
        args = json.loads(action.removeprefix("<tool_call>").removesuffix("</tool_call>"))
        return next(iter(v for k, v in args["arguments"].items() if k in ("query", "content")))
    if action.startswith("Updated memory:"):
        return action.split("\n", 1)[1]
    return re.findall(r">([^<]*)</", action)[-1]


@pytest.mark.parametrize("version", ["v0", "v1"])
@pytest.mark.parametrize("family", FAMILIES)
def test_trailing_text_cut_and_copied_text_are_format_errors_only_in_v1(family, version):
    env = _make(family, version)
    obs, info = env.reset(seed=0)
    first, action = env.snapshot(), _first_action(family, obs, info)
    strict = version == "v1"
    cases = [(first, CutAction(action), "completion cut at max_new_tokens")]
    if family != "MemSifter":  # a ranking has no prose to copy (see the next test)
        v0_copy, v1_copy, field = COPIES[family]
        copy = v1_copy if strict else v0_copy
        assert _copied_text(copy) in _instructions(env)[0]
        cases.append((first, copy, f"{field} copies the instructions"))
    if family == "MemAgent":  # a memory runs to the end of the text: trail the answer
        obs, info = _at_answer_step(env)
        first, action = env.snapshot(), _first_action(family, obs, info)
    cases.append((first, action + TRAILING, "text after the action"))
    for snap, step_action, reason in cases:
        env.restore(snap)
        _, _, _, _, info = env.step(step_action)
        assert info.get("cut", False) == isinstance(step_action, CutAction)
        error = info["parse_error"]
        if strict:
            assert error is not None and reason in error["reason"], (step_action, error)
            assert info["ops"] == [] and info["reward_terms"]["format"] == -PENALTY
        else:
            assert error is None and info["ops"], (step_action, error)
            assert info["reward_terms"]["format"] == 0.0


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_memsifter_placeholder_ranking_is_a_codec_error_in_both_versions(version):
    """A ranking has no prose field, so no copy rule: copying the v0 placeholder ``i,j,k`` was
    already a codec error (not a candidate index) in v0."""
    env = _make("MemSifter", version)
    env.reset(seed=0)
    _, reward, _, _, info = env.step("<ranking>i,j,k</ranking>")
    assert "expected a candidate index" in info["parse_error"]["reason"]
    assert reward == info["reward_terms"]["format"] == -PENALTY


def test_mem1_hint_after_an_invalid_action_shows_no_placeholder_in_v1():
    for version in ("v0", "v1"):
        env = _make("Mem1", version)
        env.reset(seed=0)
        obs, *_ = env.step("no tags at all")
        assert ("<think>...</think>" in obs) == (version == "v0")
        assert version == "v0" or "..." not in obs.split("<information>")[1]


def test_mem_alpha_v1_refuses_prose_without_a_call():
    """Mem-α's v0 takes text without a call as zero calls; v1 as text after (no) action."""
    for version, error in (("v0", False), ("v1", True)):
        env = _make("MemAlpha", version)
        env.reset(seed=0)
        _, _, _, _, info = env.step("I will remember this chunk.")
        assert (info["parse_error"] is not None) == error and info["ops"] == []


def test_memact_v1_cut_survives_the_action_cap():
    env = gym.make("memgym/MemAct-v1", max_action_chars=40).unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(CutAction("FINAL_ANSWER: " + "x" * 100))
    assert info["cut"] and "cut at max_new_tokens" in info["parse_error"]["reason"]


def test_a_cut_completion_in_a_v1_run_is_penalized():
    class CutOracle:
        name = "cut-oracle"

        def __init__(self, family):
            self.policy = baselines(f"memgym/{family}-v1")["oracle"]()

        def act(self, observations, infos):
            return [Completion(c.text, finish_reason="length")
                    for c in self.policy.act(observations, infos)]

    for family in FAMILIES:
        (traj,) = run_episodes(f"memgym/{family}-v1", {}, CutOracle(family), [0],
                               progress=False)
        assert all(s.info["cut"] and s.reward_terms["format"] == -PENALTY for s in traj.steps)


# --------------------------------------------------------- (c) instructions without placeholders
@pytest.mark.parametrize("family", FAMILIES)
def test_v1_instructions_show_no_placeholder(family):
    env, old = _make(family, "v1"), _make(family, "v0")
    obs, _ = env.reset(seed=0)
    texts = _instructions(env)
    assert texts[0].split("<problem>")[0] in obs
    for text in texts:
        assert "..." not in text and "…" not in text
        assert set(re.findall(r"<[^<>]*>", text)) <= TAGS[family], re.findall(r"<[^<>]*>", text)
        for placeholder in V0_PLACEHOLDERS[family]:
            assert placeholder not in text
    for placeholder in V0_PLACEHOLDERS[family]:  # they were there in v0
        assert any(placeholder in text for text in _instructions(old))
