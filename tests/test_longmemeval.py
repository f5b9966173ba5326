"""LongMemEval: the loader on the shared sample and on a file in the official schema, the source,
the registered env and the per-type whole-haystack evaluation."""

import json
from collections import Counter

import gymnasium as gym
import pandas as pd
import pytest
from typer.testing import CliRunner

from memgym.cli import app
from memgym.data import find_data_file
from memgym.envs import baselines
from memgym.envs.benchmarks import BENCHMARKS
from memgym.envs.longmemeval import LongMemEvalSource, load_longmemeval
from memgym.envs.longmemeval.data import SAMPLE_FILE, data_file
from memgym.envs.longmemeval.source import split_text
from memgym.envs.memory_manager import MemoryManagerEnv
from memgym.errors import ConfigError, DataFormatError, DataNotFoundError
from memgym.rollouts import run_episodes
from memgym.rollouts.whole_eval import category_table, evaluate_whole

ENV_ID = "memgym/LongMemEvalMemoryManager-v1"
LONGMEMEVAL = BENCHMARKS["longmemeval"]


def _raw_sample() -> list[dict]:
    return json.loads(find_data_file(SAMPLE_FILE).read_text())


def test_the_sample_loads_three_haystacks_and_26_questions():
    haystacks = load_longmemeval()
    assert [h.question_id for h in haystacks] == ["852ce960", "ba358f49", "6a1eabeb"]
    assert [len(h.sessions) for h in haystacks] == [39, 41, 40]
    assert [len(h.questions) for h in haystacks] == [9, 9, 8]
    # only questions[0] of the first two are LongMemEval's own; the rest are a third party's
    groups = [[q.group for q in h.questions] for h in haystacks]
    assert groups == [["knowledge-update"] + ["third-party"] * 8,
                      ["multi-session"] + ["third-party"] * 8, ["third-party"] * 8]
    assert haystacks[0].questions[0].answer == "$350,000"
    assert haystacks[1].questions[0].answer == "33"
    for h, raw in zip(haystacks, _raw_sample(), strict=True):
        dates = [s.date for s in h.sessions]
        assert sorted(dates) == dates and sorted(dates) == sorted(raw["haystack_dates"])
        assert sum(len(s.turns) for s in h.sessions) == sum(map(len, raw["haystack_sessions"]))


def test_the_source_streams_every_turn_with_its_session_date_and_evidence():
    source = LongMemEvalSource()
    assert source.num_instances == 3
    for k, h in enumerate(load_longmemeval()):
        instance = source.instance(k)
        assert instance.id == h.question_id
        assert len({i.id for i in instance.items}) == len(instance.items)
        assert max(len(i.text) for i in instance.items) <= 2000
        turns = [(s, t) for s in h.sessions for t in s.turns]
        rebuilt: dict[str, list[str]] = {}  # "<session>:<turn>" -> its parts, in order
        for item in instance.items:
            rebuilt.setdefault(item.id.split(".")[0], []).append(item)
        assert len(rebuilt) == len(turns)
        for (session, turn), parts in zip(turns, rebuilt.values(), strict=True):
            assert {(p.date, p.speaker) for p in parts} == {(session.date, turn.role)}
            assert " ".join(p.text for p in parts).split() == turn.content.split()
        assert Counter(q.category for q in instance.questions) == Counter(
            q.group for q in h.questions)
    first = source.instance(0).questions[0]  # the mortgage question: two marked turns
    assert first.evidence == ("answer_3a6f1e82_1:2", "answer_3a6f1e82_2:0")
    third_party = source.instance(0).questions[1]  # cites a session with no marked turn
    assert third_party.evidence[0] == "ultrachat_218093:0" and len(third_party.evidence) > 2
    assert LongMemEvalSource(haystack=2).instance(0) == source.instance(2)
    with pytest.raises(ConfigError, match="split must be 'test'"):
        LongMemEvalSource(split="train")
    with pytest.raises(ConfigError, match=r"haystack must be in \[0, 3\)"):
        LongMemEvalSource(haystack=3)


def test_split_text_cuts_at_whitespace_within_the_limit():
    text = "alpha beta\ngamma delta epsilon " * 40
    parts = split_text(text.strip(), 50)
    assert all(0 < len(p) <= 50 for p in parts) and len(parts) > 10
    assert " ".join(parts).split() == text.split()  # no word cut or lost
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no space: cut mid-word
    assert split_text("short", 10) == ["short"]


def _official(tmp_path):
    """A file in LongMemEval's own schema, built from the sample's first haystack: four items
    (single-session-user with a numeric answer, temporal-reasoning, an abstention
    knowledge-update, single-session-preference), sessions in reverse order (as
    ``longmemeval_oracle.json`` leaves them unsorted)."""
    raw = _raw_sample()[0]
    keep = [i for i, sid in enumerate(raw["haystack_session_ids"])
            if sid in ("ultrachat_218093", "d36d11b9_2", "answer_3a6f1e82_1", "b89a3ec3")][::-1]
    history = {f"haystack_{k}": [raw[f"haystack_{k}"][i] for i in keep]
               for k in ("session_ids", "dates", "sessions")}
    items = [("u1", "single-session-user", "How much was I pre-approved for?", 350000,
              ["answer_3a6f1e82_1"]),
             ("t1", "temporal-reasoning", "Which came first?", "the fact-checking chat",
              ["ultrachat_218093", "answer_3a6f1e82_1"]),
             ("k1_abs", "knowledge-update", "What is my new bank?", "You did not mention it",
              ["answer_3a6f1e82_1"]),
             ("p1", "single-session-preference", "Any comedy tips?", "satire", ["b89a3ec3"])]
    path = tmp_path / "longmemeval_oracle.json"
    path.write_text(json.dumps([
        {"question_id": qid, "question_type": qtype, "question": q, "answer": a,
         "question_date": "2023/12/18 (Mon) 04:17", "answer_session_ids": ev, **history}
        for qid, qtype, q, a, ev in items]))
    return path


def test_the_official_schema_loads_with_type_groups_and_abstention(tmp_path):
    path = _official(tmp_path)
    haystacks = load_longmemeval(path=str(path))
    assert [(h.question_id, len(h.questions)) for h in haystacks] == [
        ("u1", 1), ("t1", 1), ("k1_abs", 1), ("p1", 1)]
    assert [h.questions[0].group for h in haystacks] == [
        "single-session", "temporal-reasoning", "abstention", "single-session"]
    assert haystacks[0].questions[0].answer == "350000"
    assert haystacks[2].questions[0].question_type == "knowledge-update"
    assert [s.id for s in haystacks[0].sessions] == [  # sorted back into time order
        "ultrachat_218093", "d36d11b9_2", "answer_3a6f1e82_1", "b89a3ec3"]
    source = LongMemEvalSource(data_path=str(path))
    questions = [source.instance(k).questions[0] for k in range(4)]
    assert questions[0].evidence == ("answer_3a6f1e82_1:2",)  # the marked turn only
    ids = [i.id for i in source.instance(1).items]
    assert questions[1].evidence == (*[i for i in ids if i.startswith("ultrachat_218093:")],
                                     "answer_3a6f1e82_1:2")
    assert questions[2].evidence == () and questions[2].answers == ("You did not mention it",)
    # the oracle stores each answer at its last evidence item: all but the abstention are found
    env = gym.make(ENV_ID, data_path=str(path))
    assert env.unwrapped.max_steps == len(ids)
    trajectories = run_episodes(ENV_ID, [{"data_path": str(path), "haystack": k} for k in range(4)],
                                baselines(ENV_ID)["oracle"](), [0] * 4, progress=False)
    assert [t.steps[-1].reward for t in trajectories] == [1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("change, match", [
    ({"question_type": "multi-hop"}, "question_type must be one of"),
    ({"haystack_dates": ["yesterday"] * 4}, "session date must look like"),
    ({"question": None, "answer": None, "questions": ["q"], "answers": []}, "schema"),
])
def test_a_malformed_file_is_a_data_format_error(tmp_path, change, match):
    item = {**json.loads(_official(tmp_path).read_text())[0], **change}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{k: v for k, v in item.items() if v is not None}]))
    with pytest.raises(DataFormatError, match=match):
        load_longmemeval(path=str(bad))


def test_absent_files_raise_data_not_found_naming_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("MEMGYM_NO_SHARED", "1")
    monkeypatch.setenv("MEMGYM_CACHE", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "data" / "longmemeval" / "longmemeval_s_cleaned.json"
    with pytest.raises(DataNotFoundError) as err:
        gym.make(ENV_ID, variant="s")
    assert str(expected) in str(err.value)
    assert "huggingface.co/datasets/xiaowu0162/longmemeval-cleaned" in str(err.value)
    assert (err.value.relative, err.value.dataset) == (
        "longmemeval/longmemeval_s_cleaned.json", None)
    with pytest.raises(DataNotFoundError, match="memgym data fetch longmemeval_sample"):
        data_file("sample")
    with pytest.raises(ConfigError, match="variant must be one of"):
        data_file("xl")


def test_max_steps_none_is_the_longest_instance():
    lengths = [len(LongMemEvalSource().instance(k).items) for k in range(3)]
    assert gym.make(ENV_ID).unwrapped.max_steps == max(lengths)
    assert gym.make(ENV_ID, haystack=1).unwrapped.max_steps == lengths[1]
    with pytest.raises(ConfigError, match="max_steps=None needs a finite source"):
        MemoryManagerEnv(source="synthetic-kv", max_steps=None)


def test_category_table_orders_longmemeval_types_and_keeps_third_party_apart():
    scores = pd.DataFrame({
        "policy": ["p"] * 6,
        "category": ["third-party", "abstention", "single-session", "other", "single-session",
                     "temporal-reasoning"],
        "f1": [0.2, 1.0, 0.5, 0.0, 0.0, 0.6], "bleu1": [0.1, 1.0, 0.4, 0.0, 0.2, 0.6],
        "em": [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]})
    table = category_table(scores, LONGMEMEVAL.categories)
    assert table[["category", "questions"]].values.tolist() == [
        ["single-session", 2], ["temporal-reasoning", 1], ["abstention", 1], ["third-party", 1],
        ["other", 1], ["overall", 6]]
    assert table["f1"].tolist() == pytest.approx([0.25, 0.6, 1.0, 0.2, 0.0, 2.3 / 6])
    assert table["em"].tolist() == pytest.approx([0.0, 1.0, 1.0, 0.0, 0.0, 2 / 6])


def test_whole_haystack_eval_scores_every_question_per_type():
    scores = evaluate_whole(ENV_ID, {}, baselines(ENV_ID)["store-all"](), LONGMEMEVAL)
    lengths = {LongMemEvalSource().instance(k).id: len(LongMemEvalSource().instance(k).items)
               for k in range(3)}
    assert len(scores) == 26 and set(scores["instance"]) == set(lengths)
    assert (scores["steps"] == scores["instance"].map(lengths)).all()
    assert (scores["bank_size"] == scores["steps"]).all()  # every item stored whole
    assert Counter(scores["category"]) == {"third-party": 24, "knowledge-update": 1,
                                           "multi-session": 1}
    assert scores.loc[scores["gold"] == "$350,000", "em"].tolist() == [1.0]
    assert (scores["em"] <= scores["f1"]).all() and 0.5 < scores["f1"].mean() < 1.0


def test_cli_prints_the_per_type_table(tmp_path):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["longmemeval-eval", "--policy", "oracle", "--policy",
                                      "noop", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    for word in ("knowledge-update", "multi-session", "third-party", "overall", "LongMemEval"):
        assert word in result.output
    scores = pd.read_csv(out)
    assert len(scores) == 2 * 26
    assert (scores.loc[scores["policy"] == "noop", ["f1", "bleu1", "em"]] == 0).all().all()
    assert (scores.loc[scores["policy"] == "oracle", "f1"] == 1).all()
