"""Answer agents: score a memory bank by how well questions can be answered from it.

Memory-R1 rewards the memory manager with the EM of a *frozen* answer agent after its ops are
applied. Two agents are offered: :class:`RecallAnswerer`, fast and deterministic (CPU training),
and :class:`LLMAnswerer`, a frozen LLM through any :class:`memgym.engine.Engine` or through a
served reader (:class:`~memgym.envs.answer_server.AnswerServer`: batched across envs, cached),
which env kwargs name as ``answerer="served:<name>"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from memgym.engine import Engine, SamplingParams
from memgym.envs.answer_server import SERVED, AnswerServer, lookup_reader
from memgym.errors import ConfigError
from memgym.memory import MemoryBank, MemoryEntry
from memgym.scoring import exact_match, span_exact_match, span_f1, token_f1

_METRICS = {"f1": token_f1, "em": exact_match}
_SPAN_METRICS = {"f1": span_f1, "em": span_exact_match}


@dataclass(frozen=True)
class Question:
    """A question to answer from memory, with its gold answers (scored against the best)."""

    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Answered:
    """An answer agent's output for one question.

    Attributes:
        question: The question.
        gold: Its first gold answer.
        prediction: The agent's answer.
        score: Score in [0, 1] of the prediction against the best-matching gold answer.
        retrieved: Ids of the memory entries the agent was given, best first (the reads that
            memory metrics count; empty if the agent does not retrieve).
        supporting: The retrieved ids whose text answers the question: token F1 > 0 against a
            gold answer (it shares a normalized token with it).
    """

    question: str
    gold: str
    prediction: str
    score: float
    retrieved: tuple[str, ...] = ()
    supporting: tuple[str, ...] = ()


class Answerer(Protocol):
    """Answers questions from a memory bank and scores the answers."""

    name: str

    def answer(self, questions: Sequence[Question], bank: MemoryBank) -> list[Answered]:
        """One :class:`Answered` per question, in order."""
        ...


def _retrieval(hits: Sequence[MemoryEntry], answers: Sequence[str]
               ) -> tuple[dict[str, tuple[str, ...]], list[float]]:
    """``retrieved`` and ``supporting`` of :class:`Answered` for the retrieved entries
    ``hits``, and each hit's best token F1 against the gold answers."""
    f1 = [max(token_f1(e.text, a) for a in answers) for e in hits]
    return {"retrieved": tuple(e.id for e in hits),
            "supporting": tuple(e.id for e, s in zip(hits, f1, strict=True) if s > 0)}, f1


def _metric(name: str, span: bool = False):
    if name not in _METRICS:
        raise ConfigError(f"metric must be one of {sorted(_METRICS)}, got {name!r}")
    return (_SPAN_METRICS if span else _METRICS)[name]


class RecallAnswerer:
    """Deterministic stand-in for an answer agent: retrieves the top-``k`` memories for the
    question (BM25) and scores the best of them as the answer.

    Two scores (``span``): False (``answerer="recall"``, the ``-v0`` envs) scores each whole
    memory as the answer (token F1 / EM against the gold), which rewards concise memories but
    scores a stored answer below 1 inside a longer memory; True (``answerer="span"``, the
    ``-v1`` envs) scores the best answer span of each memory
    (:func:`~memgym.scoring.span_f1` / :func:`~memgym.scoring.span_exact_match`), an
    extractive reader's accuracy: 1 wherever a retrieved memory holds the answer.

    Args:
        top_k: Memories retrieved per question.
        metric: ``"f1"`` (token F1) or ``"em"``.
        span: Score the best answer span of each memory instead of the whole memory.

    Raises:
        ConfigError: ``metric`` is neither.
    """

    name = "recall"

    def __init__(self, top_k: int = 5, metric: str = "f1", span: bool = False) -> None:
        self.top_k = top_k
        self.metric_name = metric
        self.span = span
        self.metric = _metric(metric, span)

    def answer(self, questions: Sequence[Question], bank: MemoryBank) -> list[Answered]:
        """See :class:`Answerer`."""
        out = []
        for q in questions:
            best, best_score = "", 0.0
            hits = [entry for entry, _ in bank.search(q.question, self.top_k)]
            read, f1 = _retrieval(hits, q.answers)
            scores = f1 if self.metric is token_f1 else [
                max(self.metric(e.text, a) for a in q.answers) for e in hits]
            for entry, score in zip(hits, scores, strict=True):
                if score > best_score:
                    best, best_score = entry.text, score
            out.append(Answered(q.question, q.answers[0], best, best_score, **read))
        return out


def make_answerer(answerer: str | Answerer, top_k: int = 5) -> Answerer:
    """An env's ``answerer`` argument → the answerer: ``"recall"`` / ``"span"`` build a
    :class:`RecallAnswerer` over the top-``top_k`` memories that scores whole memories / their
    best answer span; ``"served:<name>"`` an :class:`LLMAnswerer` over the top-``top_k``
    memories through the reader registered as ``name``
    (:func:`~memgym.envs.answer_server.register_reader`, with its metric); an
    :class:`Answerer` passes through.

    Raises:
        ConfigError: ``answerer`` is another string, or names no registered reader.
    """
    if not isinstance(answerer, str):
        return answerer
    if answerer.startswith(SERVED):
        server, metric = lookup_reader(answerer[len(SERVED):])
        return LLMAnswerer(server, top_k=top_k, metric=metric)
    if answerer not in ("recall", "span"):
        raise ConfigError(f"answerer must be 'recall', 'span', 'served:<name>' or an Answerer, "
                          f"got {answerer!r}")
    return RecallAnswerer(top_k=top_k, span=answerer == "span")


ANSWER_PROMPT = """You answer questions about a conversation using memories.
Memories (most relevant first):
{memories}

Question: {question}
Select the memories that help, then answer in at most 6 words after "**Answer:**"."""


class LLMAnswerer:
    """Memory-R1's frozen answer agent: top-``k`` memories (BM25) in the prompt, the model picks
    the useful ones and answers in ≤ 6 words after ``**Answer:**``; greedy decoding.

    Args:
        engine: Any :class:`Engine`, all questions of a call generated in one batch; or an
            :class:`~memgym.envs.answer_server.AnswerServer`, which batches them with other
            callers' and caches each completion by ``(question, memory texts shown)``.
        top_k: Memories shown per question (Memory-R1 uses ~60).
        metric: ``"f1"`` or ``"em"``.
        max_new_tokens: Generation budget per answer (default 48 on an engine; a server
            generates with its own, so None or equal to it).

    Raises:
        ConfigError: Unknown metric, or ``max_new_tokens`` differs from the server's.
    """

    name = "llm"

    def __init__(self, engine: Engine | AnswerServer, top_k: int = 30, metric: str = "f1",
                 max_new_tokens: int | None = None) -> None:
        self.engine = engine
        self.top_k = top_k
        self.metric = _metric(metric)
        if isinstance(engine, AnswerServer):
            if max_new_tokens not in (None, engine.params.max_new_tokens):
                raise ConfigError(f"max_new_tokens={max_new_tokens}, but the server "
                                  f"{engine.name} generates {engine.params.max_new_tokens}")
            self.params = engine.params
        else:
            self.params = SamplingParams(
                max_new_tokens=48 if max_new_tokens is None else max_new_tokens, temperature=0.0)

    @staticmethod
    def extract(text: str) -> str:
        """The answer after the last ``**Answer:**`` (or ``Answer:``), else the whole text."""
        parts = re.split(r"\*{0,2}Answer:\*{0,2}", text)
        return parts[-1].strip().splitlines()[0].strip() if parts[-1].strip() else ""

    @staticmethod
    def prompt(question: str, memories: Sequence[str]) -> list[dict[str, str]]:
        """The chat prompt for ``question`` with ``memories`` (texts, best first)."""
        shown = "\n".join(f"- {m}" for m in memories) or "(no memories)"
        return [{"role": "user", "content": ANSWER_PROMPT.format(memories=shown,
                                                                 question=question)}]

    def answer(self, questions: Sequence[Question], bank: MemoryBank) -> list[Answered]:
        """See :class:`Answerer`.

        Raises:
            EngineError: The engine failed.
        """
        keys, reads = [], []
        for q in questions:
            hits = [entry for entry, _ in bank.search(q.question, self.top_k)]
            reads.append(_retrieval(hits, q.answers)[0])
            keys.append((q.question, tuple(e.text for e in hits)))
        prompts = [self.prompt(*key) for key in keys]
        if not prompts:
            texts = []
        elif isinstance(self.engine, AnswerServer):
            texts = self.engine.read(keys, prompts)
        else:
            texts = [c.text for c in self.engine.generate(prompts, self.params)]
        out = []
        for q, text, read in zip(questions, texts, reads, strict=True):
            pred = self.extract(text)
            score = max(self.metric(pred, a) for a in q.answers)
            out.append(Answered(q.question, q.answers[0], pred, score, **read))
        return out
