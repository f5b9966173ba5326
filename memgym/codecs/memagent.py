"""MemAgent's two action formats: a memory rewrite and a ``\\boxed{}`` final answer.

MemAgent (Yu et al., 2025) prompts each chunk step to end with ``Updated memory:`` and the
policy's completion *is* the new memory; the final step asks for the answer in ``\\boxed{}``.
Both are parsed leniently, because small policies drift:

* memory: the text after the last ``Updated memory:`` (any case) if the marker is present, else
  the whole text, stripped. Only an empty memory is an error.
* answer: the content of the last ``\\boxed{...}`` (nested braces balanced); prose around it is
  ignored. ``\\boxed{}`` is a valid, empty answer; no ``\\boxed{`` or unbalanced braces is an
  error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult, checks_unicode
from memgym.ops import Answer, MemoryOp, Overwrite

MEMORY_MARKER = "Updated memory:"
_MARKER = re.compile(re.escape(MEMORY_MARKER), re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")


class MemoryRewriteCodec:
    """Completion text ⇄ one :class:`Overwrite` op (see module docs)."""

    name = "memagent_memory"

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises."""
        start = 0
        for match in _MARKER.finditer(text):
            start = match.end()
        memory = text[start:].strip()
        if not memory:
            return ParseResult((), ParseError(start, "empty memory"))
        return ParseResult((Overwrite(memory),))

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """``"Updated memory:\\n<text>"`` for a single :class:`Overwrite` (text without
        surrounding whitespace, so the round trip is exact).

        Raises:
            TypeError: ``ops`` is not exactly one ``Overwrite``; that is a programming error.
        """
        if len(ops) != 1 or not isinstance(ops[0], Overwrite):
            raise TypeError(f"expected one Overwrite op, got {list(ops)!r}")
        return f"{MEMORY_MARKER}\n{ops[0].text}"


class BoxedAnswerCodec:
    """Completion text ⇄ one :class:`Answer` op taken from the last ``\\boxed{}``."""

    name = "boxed"

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises."""
        matches = list(_BOXED.finditer(text))
        if not matches:
            return ParseResult((), ParseError(0, "no \\boxed{...} answer found"))
        start = matches[-1].end()
        depth = 1
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                return ParseResult((Answer(text[start:pos].strip()),), end=pos + 1)
        return ParseResult((), ParseError(matches[-1].start(), "unbalanced braces in \\boxed{"))

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """``"\\boxed{<text>}"`` for a single :class:`Answer` (balanced braces, no surrounding
        whitespace, so the round trip is exact).

        Raises:
            TypeError: ``ops`` is not exactly one ``Answer``; that is a programming error.
        """
        if len(ops) != 1 or not isinstance(ops[0], Answer):
            raise TypeError(f"expected one Answer op, got {list(ops)!r}")
        return f"\\boxed{{{ops[0].text}}}"
