"""Validity judges: Mem-α's content-quality signal ``c_i`` (is what was written worth keeping?).

Mem-α asks an LLM judge whether each written memory is valid for its type. The default here is
:class:`RuleValidityJudge`, a deterministic CPU stand-in; any object with the
:class:`ValidityJudge` shape (e.g. an LLM judge over :class:`memgym.engine.Engine`) plugs in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from bm25s.stopwords import STOPWORDS_EN_PLUS

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(STOPWORDS_EN_PLUS)


def content_words(text: str) -> set[str]:
    """Lowercase alphanumeric words of ``text`` that are not English stopwords."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


class ValidityJudge(Protocol):
    """Scores what one step wrote to memory."""

    name: str

    def judge(self, writes: Sequence[tuple[str, str]], chunk: str) -> list[float]:
        """Validity in [0, 1] of each ``(memory_type, content)`` written while reading
        ``chunk`` (the chunk's text), in order."""
        ...


class RuleValidityJudge:
    """A write is valid (1.0) when its content has 1 to ``max_words`` whitespace words and at
    least ``min_grounded`` of its content words (non-stopwords) occur in the chunk being read;
    otherwise 0.0. Catches empty, bloated and hallucinated writes; type-agnostic.

    Args:
        max_words: Longest valid content (whitespace words).
        min_grounded: Least fraction in [0, 1] of content words found in the chunk.
    """

    name = "rule"

    def __init__(self, max_words: int = 80, min_grounded: float = 0.5) -> None:
        self.max_words, self.min_grounded = max_words, min_grounded

    def judge(self, writes: Sequence[tuple[str, str]], chunk: str) -> list[float]:
        """See :class:`ValidityJudge`."""
        seen = content_words(chunk)
        scores = []
        for _, content in writes:
            words = content_words(content)
            ok = (0 < len(content.split()) <= self.max_words and bool(words)
                  and len(words & seen) / len(words) >= self.min_grounded)
            scores.append(float(ok))
        return scores
