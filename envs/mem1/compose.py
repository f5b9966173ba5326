"""MEM1's k-objective task generator and its retrieval pool.

A task joins ``k`` single-hop questions (NQ-Open, one gold passage each) and multi-hop
questions (HotpotQA, two supporting paragraphs each), drawn without replacement from one split,
into one question (MEM1 composes its multi-objective QA tasks from HotpotQA and NQ this way).
The retrieval pool of a split holds the NQ gold passages and all ten HotpotQA paragraphs (gold
and distractors) of that split's questions; splits cut each corpus with
:func:`memgym.envs.sources.split_range`, so their questions are disjoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from memgym.envs.corpora import Paragraph, load_hotpotqa, load_nq_open
from memgym.envs.sources import QAItem, StreamItem, split_range
from memgym.retrieval import BM25Index

MAX_SUBQUESTION_CHARS = 256
"""Sub-questions longer than this (none in the data today) are left out of the bank."""

_PREFIX = "Answer each question, in order: "
_NUMBERED = re.compile(r"\((\d+)\) (.*?)(?=; \(\d+\) |$)", re.DOTALL)


@dataclass(frozen=True, eq=False, repr=False)
class QuestionBank:
    """The sub-questions and retrieval pool of one split.

    Attributes:
        nq: NQ-Open questions (``evidence``: the gold passage's pool id); ids ``nq:<index>``.
        hotpot: HotpotQA questions (``evidence``: the 2 supporting paragraphs' pool ids).
        nq_ids / hotpot_ids: Index of each question in its full corpus file.
        passages: The pool; ``id`` is ``p<index>``, ``speaker`` the title, ``text`` the passage.
        index: BM25 over ``"<title>. <text>"`` of each passage, in pool order.
    """

    nq: tuple[QAItem, ...]
    hotpot: tuple[QAItem, ...]
    nq_ids: tuple[int, ...]
    hotpot_ids: tuple[int, ...]
    passages: tuple[StreamItem, ...]
    index: BM25Index


@dataclass(frozen=True)
class ComposedTask:
    """One k-objective question.

    Attributes:
        id: ``"+"``-joined sub-question ids, e.g. ``"nq:12+hotpot:40"``.
        question: The composed question shown to the agent (see :func:`format_question`).
        parts: The sub-questions in the order they are asked (and must be answered).
    """

    id: str
    question: str
    parts: tuple[QAItem, ...]


def _usable(question: str, answers: tuple[str, ...]) -> bool:
    # ';' separates sub-questions and sub-answers, so it may appear in neither.
    return (len(question) <= MAX_SUBQUESTION_CHARS and ";" not in question
            and bool(answers) and not any(";" in a for a in answers))


@lru_cache(maxsize=3)
def question_bank(split: str) -> QuestionBank:
    """The (cached) bank of ``split``: loads the corpora and builds one BM25 index (~0.5 s).

    Raises:
        ConfigError: Unknown split.
        DataNotFoundError / DataFormatError: A corpus file is missing or malformed.
    """
    nq_all, hotpot_all = load_nq_open(), load_hotpotqa()
    pool: dict[tuple[str, str], int] = {}

    def pid(paragraph: Paragraph) -> str:
        key = (paragraph.title, " ".join(paragraph.text.split()))
        return f"p{pool.setdefault(key, len(pool))}"

    nq, nq_ids, hotpot, hotpot_ids = [], [], [], []
    for i in split_range(len(hotpot_all), split):
        record = hotpot_all[i]
        ids = [pid(p) for p in record.paragraphs]
        gold = tuple(p for p, par in zip(ids, record.paragraphs, strict=True) if par.supporting)
        if _usable(record.question, (record.answer,)):
            hotpot.append(QAItem(record.question, (record.answer,), gold))
            hotpot_ids.append(i)
    for i in split_range(len(nq_all), split):
        record = nq_all[i]
        gold = (pid(record.passage),)
        question = record.question.rstrip("?") + "?"
        if _usable(question, record.answers):
            nq.append(QAItem(question, record.answers, gold))
            nq_ids.append(i)
    passages = tuple(StreamItem(f"p{i}", text, speaker=title)
                     for i, (title, text) in enumerate(pool))
    index = BM25Index([f"{p.speaker}. {p.text}" for p in passages])
    return QuestionBank(tuple(nq), tuple(hotpot), tuple(nq_ids), tuple(hotpot_ids), passages,
                        index)


def format_question(questions: list[str]) -> str:
    """``"Answer each question, in order: (1) q1; (2) q2"``; inverse of :func:`split_question`."""
    return _PREFIX + "; ".join(f"({i}) {q}" for i, q in enumerate(questions, 1))


def split_question(text: str) -> list[str]:
    """The sub-questions of a :func:`format_question` string (``[]`` if it is not one)."""
    if not text.startswith(_PREFIX):
        return []
    return [q for _, q in _NUMBERED.findall(text[len(_PREFIX):])]


def compose(bank: QuestionBank, rng: np.random.Generator, k: int,
            hotpot_fraction: float) -> ComposedTask:
    """Draw a k-objective task: ``Binomial(k, hotpot_fraction)`` HotpotQA questions, the rest
    NQ, each without replacement, in a random order.

    Args:
        bank: The split's :func:`question_bank`.
        rng: The env's generator (the task is a pure function of its state).
        k: Number of sub-questions (the caller checks 1 <= k <= both pools' sizes).
        hotpot_fraction: Probability in [0, 1] that a sub-question comes from HotpotQA.
    """
    n_hot = int(rng.binomial(k, hotpot_fraction))
    picks = ([("hotpot", int(i)) for i in rng.choice(len(bank.hotpot), n_hot, replace=False)]
             + [("nq", int(i)) for i in rng.choice(len(bank.nq), k - n_hot, replace=False)])
    picks = [picks[int(j)] for j in rng.permutation(k)]
    parts = tuple(bank.hotpot[i] if src == "hotpot" else bank.nq[i] for src, i in picks)
    ids = "+".join(f"{src}:{(bank.hotpot_ids if src == 'hotpot' else bank.nq_ids)[i]}"
                   for src, i in picks)
    return ComposedTask(ids, format_question([p.question for p in parts]), parts)
