"""Strict format rules for reward (issue 18): for every codec, a canonical action passes, and
text after the action, a completion cut at ``max_new_tokens`` and op text copied from the
instructions are format errors with their reason; the lenient parse is unchanged."""

import gymnasium as gym
import pytest

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.codecs import (
    CutAction,
    ImportanceCodec,
    Mem0JsonCodec,
    MemAlphaCodec,
    RankingCodec,
    XmlTagsCodec,
    strict_result,
)
from memgym.codecs.memact import MemActCodec
from memgym.codecs.memagent import BoxedAnswerCodec, MemoryRewriteCodec
from memgym.engine import Completion
from memgym.ops import (
    Add,
    Answer,
    EditContext,
    MemoryInsert,
    Overwrite,
    Rank,
    Rate,
    Retrieve,
    SetState,
    Update,
)
from memgym.scoring import span_exact_match, span_f1
from memgym.trajectory import env_action

INSTRUCTIONS = ('Reply like {"text": "<new fact>"} or <search>your query</search> or '
                '"content": "..." and summarize the key facts so far.')

# codec, a canonical action's ops, ops whose prose copies INSTRUCTIONS
CASES = {
    "mem0_json": (Mem0JsonCodec(), [Add("Caroline adopted a dog in May"), Update("3", "x y")],
                  [Add("<new fact>")]),
    "mem_alpha": (MemAlphaCodec(), [MemoryInsert("semantic", "Paris is in France")],
                  [MemoryInsert("semantic", "...")]),
    "memact": (MemActCodec(), [Retrieve("Eiffel tower height", 3)],
               [EditContext(("ab12cd34",), "the key facts so far")]),
    "memact_answer": (MemActCodec(), [Answer("324 metres")], [Answer("your query")]),
    "xml_tags": (XmlTagsCodec(), [SetState("need the height"), Retrieve("Eiffel tower", 3)],
                 [SetState("x"), Retrieve("your query", 3)]),
    "memagent_memory": (MemoryRewriteCodec(), [Overwrite("The tower is 324 m tall.")],
                        [Overwrite("summarize the key facts so far")]),
    "memagent_answer": (BoxedAnswerCodec(), [Answer("324 m")], [Answer("<new fact>")]),
    "ranking": (RankingCodec(), [Rank((2, 0, 1))], None),
    "importance": (ImportanceCodec(), [Rate(7)], None),  # a number: no prose to copy
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_canonical_actions_pass_strict_and_parse_as_before(name):
    codec, ops, _ = CASES[name]
    text = codec.encode(ops)
    lenient = codec.decode(text)
    assert lenient.ok and lenient.ops == tuple(ops)
    assert strict_result(lenient, text, instructions=INSTRUCTIONS) == lenient
    # surrounding whitespace (and a closing code fence) is not text after the action
    assert strict_result(codec.decode(text + " \n```\n"), text + " \n```\n").ok


@pytest.mark.parametrize("name", sorted(CASES))
def test_text_after_the_action_is_a_format_error(name):
    codec, ops, _ = CASES[name]
    text = codec.encode(ops) + "\nand then some junk"
    lenient = codec.decode(text)
    result = strict_result(lenient, text)
    if name == "memagent_memory":  # the whole completion is the memory: no "after"
        assert result.ok and result.ops[0].text.endswith("some junk")
        return
    assert lenient.ok and lenient.ops == tuple(ops)  # the lenient codec ignores it
    assert not result.ok and result.ops == ()
    assert result.error.reason == "text after the action: 'and then some junk'"
    assert text[result.error.position:].strip() == "and then some junk"


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_completion_cut_at_max_new_tokens_is_a_format_error(name):
    codec, ops, _ = CASES[name]
    text = codec.encode(ops)  # even a complete action: the policy did not end its turn
    result = strict_result(codec.decode(text), text, cut=True)
    assert not result.ok and result.error.position == len(text)
    assert "cut at max_new_tokens" in result.error.reason


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case[2]))
def test_op_text_copied_from_the_instructions_is_a_format_error(name):
    codec, _, copied = CASES[name]
    text = codec.encode(copied)
    lenient = codec.decode(text)
    assert lenient.ok
    result = strict_result(lenient, text, instructions=INSTRUCTIONS)
    assert not result.ok and "copies the instructions" in result.error.reason
    assert strict_result(lenient, text).ok  # without instructions nothing is copied


def test_the_copy_rule_spares_single_words_and_real_content():
    codec = Mem0JsonCodec()
    for text in ("Reply", "query", "Caroline said your query was long"):
        action = codec.encode([Add(text)])
        assert strict_result(codec.decode(action), action, instructions=INSTRUCTIONS).ok, text
    for text in ("New fact", "your   QUERY", "<new fact>", "..."):
        action = codec.encode([Add(text)])
        assert not strict_result(codec.decode(action), action, instructions=INSTRUCTIONS).ok


def test_the_codec_error_comes_before_the_strict_rules():
    codec = Mem0JsonCodec()
    lenient = codec.decode('{"memory": [{"event": "ADD"}]} junk')
    assert strict_result(lenient, "x").error == lenient.error
    assert strict_result(lenient, "x", cut=True).error.reason.startswith("completion cut")


def test_completion_action_marks_a_cut_completion():
    assert type(Completion("x").action) is str
    cut = Completion("x", finish_reason="length").action
    assert isinstance(cut, CutAction) and cut == "x"
    assert isinstance(env_action("x", {"cut": True}), CutAction)
    assert isinstance(env_action("x", '{"bank_size": 0, "cut": true}'), CutAction)
    assert type(env_action("x", '{"bank_size": 0}')) is str and type(env_action("x", None)) is str


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_the_memory_manager_penalizes_strict_errors_only_in_v1(version):
    env = gym.make(f"memgym/SyntheticMemoryManager-{version}")
    env.reset(seed=0)
    placeholder = "<new fact>" if version == "v0" else "with the new details"
    assert placeholder in env.unwrapped.instructions
    if version == "v1":  # nothing placeholder-like to copy
        assert "<" not in env.unwrapped.instructions and "..." not in env.unwrapped.instructions
    actions = ['{"memory": [{"event": "NONE"}]} trailing', CutAction('{"memory": []}'),
               f'{{"memory": [{{"event": "ADD", "text": "{placeholder}"}}]}}']
    for action in actions:
        _, reward, _, _, info = env.step(action)
        assert info.get("cut", False) == isinstance(action, CutAction)
        assert (info["parse_error"] is not None) == (version == "v1")
        assert reward == info["reward_terms"]["format"] == (-0.1 if version == "v1" else 0.0)


def test_span_scores_the_stored_answer_inside_a_longer_memory():
    memory = "Caroline: I adopted a dog named Max in May 2023!"
    assert span_f1(memory, "Max") == span_exact_match(memory, "Max") == 1.0
    assert span_f1(memory, "in May 2023") == 1.0
    assert span_f1(memory, "May 2024") == pytest.approx(2 / 3)  # best span "may": p 1, r 1/2
    assert span_exact_match(memory, "May 2024") == 0.0
    assert span_f1(memory, "Paris") == span_exact_match(memory, "Paris") == 0.0
    assert span_f1("", "") == 1.0 and span_f1("x", "") == 0.0


class _CutEveryOther:
    """Store-all on the synthetic env, its odd steps' completions cut at max_new_tokens."""

    name = "store-all-cut"

    def __init__(self):
        from memgym.envs import baselines

        self.policy = baselines("memgym/SyntheticMemoryManager-v1")["store-all"]()
        self.calls = 0

    def act(self, observations, infos):
        self.calls += 1
        return [Completion(c.text, finish_reason="length" if self.calls % 2 else "stop")
                for c in self.policy.act(observations, infos)]


def test_a_v1_trajectory_with_cut_steps_replays_exactly(tmp_path):
    from memgym.replay import replay
    from memgym.rollouts.runner import run_episodes
    from memgym.trajectory import load_trajectories, write_trajectories

    trajs = run_episodes("memgym/SyntheticMemoryManager-v1", {}, _CutEveryOther(), [0, 1],
                         num_envs=1, progress=False)
    cut = [s for t in trajs for s in t.steps if (s.info or {}).get("cut")]
    assert cut and all("cut at max_new_tokens" in s.parse_error["reason"] for s in cut)
    path = write_trajectories(trajs, tmp_path / "t.parquet")
    report = replay(load_trajectories(path))
    assert report.ok and report.steps == sum(len(t.steps) for t in trajs)


def test_v1_memory_manager_reads_dated_memories_and_the_evidence_teacher_keeps_evidence():
    from memgym.envs import baselines
    from memgym.rollouts.runner import run_episodes

    kwargs = {"split": "val", "window": 6}
    for version in ("v0", "v1"):
        env_id = f"memgym/LoCoMoMemoryManager-{version}"
        (store,) = run_episodes(env_id, kwargs, baselines(env_id)["store-all"](), [1],
                                progress=False)
        predictions = [q["prediction"] for q in store.steps[-1].info["qa"] if q["score"] > 0]
        written = {op["text"] for s in store.steps for op in s.ops}
        assert predictions or version == "v0"  # v1 reads the memory with its turn's date
        for prediction in predictions:
            date, _, text = prediction.partition(") ")
            assert (version == "v1") == (date.startswith("(") and text in written), prediction
    (teacher,) = run_episodes(env_id, kwargs, baselines(env_id)["evidence"](), [1],
                              progress=False)
    assert 0 < sum(bool(s.ops) for s in teacher.steps) < len(teacher.steps)
    env = gym.make(env_id, **kwargs).unwrapped
    env.reset(seed=1)  # the teacher copies each kept turn as "<speaker>: <text>"
    assert {op["text"] for s in teacher.steps for op in s.ops} <= {
        f"{item.speaker}: {item.text}" for item in env.instance.items}
