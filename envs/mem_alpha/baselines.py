"""Scripted baselines for Mem-α memory construction (Hermes tool-call actions).

They read the structured ``info["chunk"]`` (the oracle also reads ``info["privileged"]``); they
are baselines to compare learned policies against, not stand-ins for the LLM path.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from memgym.codecs import MemAlphaCodec
from memgym.engine import Completion
from memgym.envs.mem_alpha.validity import content_words
from memgym.ops import MemoryInsert, MemoryOp, MemoryUpdate

_CODEC = MemAlphaCodec()
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _gist(text: str, words: int) -> str:
    """The first sentence of ``text``, cut to its first ``words`` words."""
    first = next(iter(_sentences(text)), "")
    return " ".join(first.split()[:words])


class NoopPolicy:
    """Never calls a tool (the empty action): no memory, so no accuracy and no call credit."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion("") for _ in observations]


class KeySentencesPolicy:
    """Rule-based memory builder: the core paragraph is the gist of the latest chunk (its first
    sentence, cut to ``core_words`` words); every sentence of the chunk with at least
    ``min_words`` words (the first ``max_facts``, cut to ``max_chars``) is inserted as a fact,
    into episodic memory when the chunk has a date, else into semantic memory.
    """

    name = "key-sentences"

    def __init__(self, min_words: int = 6, max_facts: int = 8, core_words: int = 30,
                 max_chars: int = 400) -> None:
        self.min_words, self.max_facts = min_words, max_facts
        self.core_words, self.max_chars = core_words, max_chars

    def _ops(self, chunk: dict) -> list[MemoryOp]:
        memory_type = "episodic" if chunk["date"] else "semantic"
        facts = [textwrap.shorten(s, self.max_chars, placeholder="")
                 for s in _sentences(chunk["text"]) if len(s.split()) >= self.min_words]
        ops: list[MemoryOp] = [MemoryUpdate("core", _gist(chunk["text"], self.core_words))]
        return ops + [MemoryInsert(memory_type, f) for f in facts[:self.max_facts]]

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode(self._ops(info["chunk"]))) for info in infos]


class OraclePolicy:
    """Upper bound from gold data: at every chunk, update the core paragraph to the chunk's
    gist (its first ``core_words`` words); at the chunk that completes a question's evidence,
    insert the shortest gold answer tagged with the question's longest content word found in
    the chunk, e.g. ``"France (normandy)"`` (concise, grounded, and found by BM25 on the
    question)."""

    name = "oracle"

    def __init__(self, core_words: int = 12) -> None:
        self.core_words = core_words

    @staticmethod
    def _fact(question: str, answers: Sequence[str], chunk: str) -> str:
        words = content_words(question)
        grounded = words & content_words(chunk) or words
        answer = min(answers, key=len)
        return f"{answer} ({max(sorted(grounded), key=len)})" if grounded else answer

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for info in infos:
            text = info["chunk"]["text"]
            ops: list[MemoryOp] = [MemoryUpdate("core", _gist(text, self.core_words))]
            ops += [MemoryInsert("semantic", self._fact(q, answers, text))
                    for q, answers in info["privileged"]["answers"]]
            out.append(Completion(_CODEC.encode(ops)))
        return out


BASELINES = {p.name: p for p in (OraclePolicy, KeySentencesPolicy, NoopPolicy)}
