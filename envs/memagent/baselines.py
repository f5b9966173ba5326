"""Scripted baselines for MemAgent's overwrite reader.

They read the structured ``info`` (``phase``, ``memory``, ``question``, ``max_memory_tokens``;
the oracle also reads ``info["privileged"]``) and emit MemAgent text actions: ``Updated
memory:`` rewrites and a ``\\boxed{}`` answer. They are baselines to compare learned policies
against, not stand-ins for the LLM path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.memagent import BoxedAnswerCodec, MemoryRewriteCodec
from memgym.engine import Completion
from memgym.envs.memagent.env import NO_MEMORY, cut_memory
from memgym.ops import Answer, Overwrite

_MEMORY, _ANSWER = MemoryRewriteCodec(), BoxedAnswerCodec()
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
_PHRASE = re.compile(r"[A-Z0-9][\w'-]*(?:\s+(?:of|the|de|and|[A-Z0-9][\w'-]*))*(?<![\s,])")
_NUMBER = re.compile(r"\b\d[\d,.]*\b(?:\s+[a-z]+)?")
_YEAR = re.compile(r"\b(?:1[0-9]|20)\d\d\b")
_CHOICE = re.compile(r"(?:,|\b(?:between|is|was|are|were))\s+([^,?]+?)\s+or\s+([^,?]+?)\s*\??$")
_AUX = {"is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had",
        "will", "would", "should"}
_STOP = _AUX | {"what", "when", "where", "which", "who", "whom", "whose", "why", "how", "the",
                "and", "for", "with", "that", "this", "from", "his", "her", "their", "they",
                "she", "him", "about", "after", "before", "many", "much", "name", "both", "same",
                "also", "than", "into", "known", "based", "first", "year"}


def _content(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP}


def _memory(text: str) -> Completion:
    return Completion(_MEMORY.encode([Overwrite(text)]))


def _answer(text: str) -> Completion:
    return Completion(_ANSWER.encode([Answer(text.replace("{", "(").replace("}", ")"))]))


class NoopPolicy:
    """Never learns anything: rewrites the memory to ``No previous memory`` at every chunk and
    answers ``\\boxed{unknown}`` (well-formed, so it scores exactly 0: the lower bound)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_memory(NO_MEMORY) if info["phase"] == "memory" else _answer("unknown")
                for info in infos]


class KeywordKeepPolicy:
    """Keyword filter with a span-picking answerer.

    Memory: the sentences (and title lines) of the previous memory and the chunk that share at
    least ``min_overlap`` content words with the question, the highest-overlap ones first
    within ``max_memory_tokens``, kept in reading order (the previous memory when none do).
    Answer, from the memory: ``yes`` for a yes/no question (starts with an auxiliary verb); the
    first option of an ``A or B`` question; a year for *when* / *what year*; a number for *how
    many* / *how much*; else the capitalized phrase not in the question from the memory line
    that overlaps the question most.
    """

    name = "keyword-keep"

    def __init__(self, min_overlap: int = 1) -> None:
        self.min_overlap = min_overlap

    def _rewrite(self, observation: str, info: dict) -> Completion:
        chunk = observation.split("<section>\n", 1)[-1].rsplit("\n</section>", 1)[0]
        old = [] if info["memory"] == NO_MEMORY else info["memory"].split("\n")
        query = _content(info["question"])
        lines = list(dict.fromkeys(old + [s.strip() for s in _SENTENCE.split(chunk) if s.strip()]))
        scored = [(len(query & _content(line)), k) for k, line in enumerate(lines)]
        ranked = sorted((k for n, k in scored if n >= self.min_overlap),
                        key=lambda k: -scored[k][0])
        kept, budget = [], info["max_memory_tokens"]
        for k in ranked:
            size = len(lines[k].split())
            if size <= budget:
                kept.append(k)
                budget -= size
        text = "\n".join(lines[k] for k in sorted(kept)) or info["memory"]
        return _memory(cut_memory(text, info["max_memory_tokens"]))

    @staticmethod
    def _span(question: str, memory: str) -> str:
        lowered = question.lower()
        words = lowered.split()
        choice = _CHOICE.search(question)
        if choice:
            return choice.group(1)
        if words and words[0] in _AUX:
            return "yes"
        query = _content(question)
        lines = sorted(memory.split("\n"), key=lambda line: -len(query & _content(line)))
        pattern = (_YEAR if lowered.startswith(("when", "what year", "in what year"))
                   else _NUMBER if lowered.startswith(("how many", "how much")) else _PHRASE)
        for line in lines:
            for match in pattern.finditer(line):
                if not _content(match.group()) <= query or pattern is not _PHRASE:
                    return match.group()
        return "unknown"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [self._rewrite(obs, info) if info["phase"] == "memory"
                else _answer(self._span(info["question"], info["memory"]))
                for obs, info in zip(observations, infos, strict=True)]


class OraclePolicy:
    """Upper bound from gold data: keeps the memory until every evidence chunk has been read,
    then rewrites it to the gold answer, and boxes the gold answer."""

    name = "oracle"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for info in infos:
            gold = info["privileged"]
            if info["phase"] == "answer":
                out.append(_answer(gold["answer"]))
            else:
                out.append(_memory(gold["answer"] if gold["evidence_read"] else info["memory"]))
        return out


BASELINES = {p.name: p for p in (OraclePolicy, KeywordKeepPolicy, NoopPolicy)}
