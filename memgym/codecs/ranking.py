"""MemSifter's ranking action: ``<ranking>i,j,…</ranking>`` → one :class:`~memgym.ops.Rank`.

Canonical form (MemSifter, Tan et al. 2026, arXiv:2603.03379; its proxy writes
``<think>…</think><ranking>27,13,34</ranking>``)::

    <ranking>3,0,7</ranking>

Accepted leniently: any text around the tags (a ``<think>`` block included), tags in any case,
indices separated by commas and/or whitespace, a trailing comma, brackets around the list. When
several ranking blocks are written, the last complete one counts (the final answer). An empty
block is a valid, empty ranking. The codec does not know how many candidates there are:
duplicates and out-of-range indices are kept as written for the env to judge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult, checks_unicode
from memgym.ops import MemoryOp, Rank

_OPEN = re.compile(r"<ranking>", re.IGNORECASE)
_CLOSE = re.compile(r"</ranking>", re.IGNORECASE)
_TOKEN = re.compile(r"[^,\s\[\]]+")
_INDEX = re.compile(r"\d{1,9}")  # more digits cannot be a candidate index (and int() may refuse)


class RankingCodec:
    """``<ranking>i,j,…</ranking>`` ⇄ ``(Rank(order),)`` (see module docs)."""

    name = "ranking"

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises.

        Errors: no ``<ranking>`` tag (position 0), no ``</ranking>`` after the last one
        (position: end of text), or an item that is not a non-negative integer of at most 9
        digits (position: the item's offset).
        """
        opens = list(_OPEN.finditer(text))
        if not opens:
            return ParseResult((), ParseError(0, "no <ranking> tag found"))
        close = None
        for start in reversed(opens):
            close = _CLOSE.search(text, start.end())
            if close is not None:
                break
        if close is None:
            return ParseResult((), ParseError(len(text), "<ranking> is not closed by </ranking>"))
        order = []
        for token in _TOKEN.finditer(text, start.end(), close.start()):
            if not _INDEX.fullmatch(token.group()):
                return ParseResult((), ParseError(
                    token.start(), f"expected a candidate index (integer >= 0), got "
                                   f"{token.group()[:40]!r}"))
            order.append(int(token.group()))
        return ParseResult((Rank(tuple(order)),), end=close.end())

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render one :class:`Rank` op as ``<ranking>i,j,…</ranking>``.

        Raises:
            TypeError: ``ops`` is not exactly one ``Rank`` (a programming error).
        """
        if len(ops) != 1 or not isinstance(ops[0], Rank):
            raise TypeError(f"a ranking action is exactly one Rank op, got {list(ops)!r}")
        return f"<ranking>{','.join(str(i) for i in ops[0].order)}</ranking>"
