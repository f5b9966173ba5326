"""Loader for LongMemEval (Wu et al., ICLR 2025): timestamped chat histories with questions.

Two schemas are read:

* LongMemEval's own (``longmemeval_s_cleaned.json``, ``longmemeval_m_cleaned.json``,
  ``longmemeval_oracle.json`` of https://huggingface.co/datasets/xiaowu0162/longmemeval-cleaned,
  MIT): one question per haystack, singular ``question`` / ``answer`` / ``answer_session_ids``,
  ``question_type`` one of :data:`TYPE_GROUPS`, abstention questions marked by a ``question_id``
  ending in ``_abs``. memgym cannot download them (no pinned copy): put them in a data dir as
  ``longmemeval/<file>`` (see :data:`VARIANTS` and :mod:`memgym.data`).
* The plural-list schema of the bundled sample (``../shared/data/longmemeval_sample``,
  ``memgym data fetch longmemeval_sample``): three genuine LongMemEval_S haystacks whose question
  lists (``questions`` / ``answers`` / ``answer_session_ids``, one evidence list per question)
  were rewritten by a third party. Only the questions of :data:`ORIGINAL_QUESTIONS` are
  LongMemEval's; every other question of that schema is labelled ``"third-party"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from memgym.data import cache_dir, find_data_file
from memgym.errors import ConfigError, DataFormatError

SAMPLE_FILE = "longmemeval_sample/longmemeval_s_3haystacks_thirdparty_qa.json"
OFFICIAL_URL = "https://huggingface.co/datasets/xiaowu0162/longmemeval-cleaned"
# variant -> path inside a data dir
VARIANTS: dict[str, str] = {"sample": SAMPLE_FILE,
                            "s": "longmemeval/longmemeval_s_cleaned.json",
                            "m": "longmemeval/longmemeval_m_cleaned.json",
                            "oracle": "longmemeval/longmemeval_oracle.json"}
# LongMemEval's question types -> the groups its paper reports (abstention: ``_abs`` ids)
TYPE_GROUPS: dict[str, str] = {"single-session-user": "single-session",
                               "single-session-assistant": "single-session",
                               "single-session-preference": "single-session",
                               "multi-session": "multi-session",
                               "temporal-reasoning": "temporal-reasoning",
                               "knowledge-update": "knowledge-update"}
ABSTENTION, THIRD_PARTY = "abstention", "third-party"
CATEGORY_ORDER = ("single-session", "multi-session", "temporal-reasoning", "knowledge-update",
                  ABSTENTION, THIRD_PARTY)
# The sample's questions that are LongMemEval's own (question_id -> question); see its SOURCE.md
ORIGINAL_QUESTIONS = {
    "852ce960": "What was the amount I was pre-approved for when I got my mortgage from Wells "
                "Fargo?",
    "ba358f49": "How many years will I be when my friend Rachel gets married?"}
_DATE_FORMAT = "%Y/%m/%d (%a) %H:%M"  # LongMemEval's timestamps, e.g. "2023/07/12 (Wed) 10:14"


@dataclass(frozen=True)
class Turn:
    """One chat turn: ``role`` (``user`` / ``assistant``), its text and whether LongMemEval
    marks it as holding evidence (``has_answer``)."""

    role: str
    content: str
    has_answer: bool


@dataclass(frozen=True)
class Session:
    """One chat session of a haystack: its id, timestamp (``"2023/07/12 (Wed) 10:14"``) and
    turns."""

    id: str
    date: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Question:
    """A question about a haystack.

    Attributes:
        question_id: LongMemEval's id of the haystack's question (``_abs`` suffix: abstention).
        question: The question text.
        answer: Gold answer (numbers as text).
        question_type: LongMemEval's fine type (e.g. ``single-session-user``); for a
            third-party question, the type of the haystack's original question.
        group: The reported group (:data:`CATEGORY_ORDER`).
        question_date: When the question is asked (after the whole haystack).
        answer_session_ids: Ids of the sessions holding the evidence.
    """

    question_id: str
    question: str
    answer: str
    question_type: str
    group: str
    question_date: str
    answer_session_ids: tuple[str, ...]


@dataclass(frozen=True)
class Haystack:
    """One LongMemEval item: its sessions in chronological order and its questions."""

    question_id: str
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]


def question_group(question_type: str, question_id: str) -> str:
    """The reported group of a LongMemEval question: ``abstention`` for an id ending in
    ``_abs``, else :data:`TYPE_GROUPS` of its type (the three single-session types are one
    group).

    Raises:
        DataFormatError: ``question_type`` is not one of LongMemEval's types.
    """
    if question_type not in TYPE_GROUPS:
        raise DataFormatError(f"question_type must be one of {sorted(TYPE_GROUPS)}, got "
                              f"{question_type!r} (question {question_id})")
    return ABSTENTION if question_id.endswith("_abs") else TYPE_GROUPS[question_type]


def _timestamp(date: str) -> datetime:
    try:
        return datetime.strptime(date, _DATE_FORMAT)
    except ValueError as exc:
        raise DataFormatError(f"session date must look like '2023/07/12 (Wed) 10:14', got "
                              f"{date!r}") from exc


def _haystack(raw: dict) -> Haystack:
    sessions = [Session(sid, date, tuple(Turn(t["role"], str(t["content"]),
                                              bool(t.get("has_answer", False))) for t in turns))
                for sid, date, turns in zip(raw["haystack_session_ids"], raw["haystack_dates"],
                                            raw["haystack_sessions"], strict=True)]
    # stable: longmemeval_oracle.json is not sorted, the sample's haystacks by day only
    sessions.sort(key=lambda s: _timestamp(s.date))
    qid, qtype = raw["question_id"], raw["question_type"]
    group = question_group(qtype, qid)
    if "questions" in raw:  # the sample's plural-list schema
        items = zip(raw["questions"], raw["answers"], raw["answer_session_ids"], strict=True)
        questions = [Question(qid, q, str(a), qtype,
                              group if ORIGINAL_QUESTIONS.get(qid) == q else THIRD_PARTY,
                              raw["question_date"], tuple(e)) for q, a, e in items]
    else:
        questions = [Question(qid, raw["question"], str(raw["answer"]), qtype, group,
                              raw["question_date"], tuple(raw["answer_session_ids"]))]
    return Haystack(qid, tuple(sessions), tuple(questions))


def data_file(variant: str) -> Path:
    """The file of ``variant`` in the data dirs (:func:`memgym.data.find_data_file`).

    Raises:
        ConfigError: Unknown variant.
        DataNotFoundError: No data dir holds it; the message names the expected path and,
            for an official file, where to download it.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    relative = VARIANTS[variant]
    how = None if variant == "sample" else (
        f"download {Path(relative).name} from {OFFICIAL_URL} (MIT) and save it as "
        f"{cache_dir() / 'data' / relative} (or as {relative} under $MEMGYM_DATA_DIR)")
    return find_data_file(relative, how=how)


@lru_cache(maxsize=2)
def load_longmemeval(variant: str = "sample", path: str | None = None) -> tuple[Haystack, ...]:
    """Load a LongMemEval file of either schema (see the module docstring).

    Args:
        variant: ``sample`` (the bundled 3-haystack sample), ``s`` / ``m`` (LongMemEval_S /
            _M, cleaned) or ``oracle`` (evidence sessions only); found in the data dirs.
        path: Read this file instead of ``variant``'s.

    Returns:
        Haystacks in file order, sessions sorted by timestamp.

    Raises:
        ConfigError: Unknown variant, or ``path`` does not exist.
        DataNotFoundError: The variant's file is in no data dir.
        DataFormatError: The file is neither schema, or holds an unknown question type.
    """
    file = Path(path) if path else data_file(variant)
    if not file.is_file():
        raise ConfigError(f"LongMemEval file {file} does not exist")
    try:
        return tuple(_haystack(raw) for raw in json.loads(file.read_text()))
    except (KeyError, TypeError, ValueError) as exc:  # DataFormatError is a ValueError
        if isinstance(exc, DataFormatError):
            raise DataFormatError(f"{file}: {exc}") from exc
        raise DataFormatError(f"{file}: not LongMemEval's schema ({exc!r})") from exc
