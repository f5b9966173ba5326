"""An importance rating of the new stream item: ``{"importance": n}`` → one
:class:`~memgym.ops.Rate`.

Canonical form (the importance score of Generative Agents, Park et al., 2023, asked as JSON)::

    {"importance": 7}

Accepted leniently: code fences and prose before the JSON object, an integer-valued number
(``7.0``) or a string of digits (``"7"``). The score must lie in ``[0, max_score]``; text after the
object is left to :func:`~memgym.codecs.base.strict_result` (the result's ``end``).
"""

from __future__ import annotations

from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult, checks_unicode, decode_json_span
from memgym.errors import ConfigError
from memgym.ops import MemoryOp, Rate


class ImportanceCodec:
    """``{"importance": n}`` ⇄ ``(Rate(n),)`` (see module docs).

    Args:
        max_score: The highest score; a score outside ``[0, max_score]`` is a parse error.

    Raises:
        ConfigError: ``max_score`` is not a positive integer.
    """

    name = "importance"

    def __init__(self, max_score: int = 9) -> None:
        if isinstance(max_score, bool) or not isinstance(max_score, int) or max_score < 1:
            raise ConfigError(f"max_score must be a positive integer, got {max_score!r}")
        self.max_score = max_score

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises.

        Errors: no ``{`` (position 0), invalid JSON, an object without ``"importance"``, or a
        score that is not an integer in ``[0, max_score]`` (position: the object's start).
        """
        start = text.find("{")
        if start < 0:
            return ParseResult((), ParseError(0, "no JSON object found"))
        value, stop, error = decode_json_span(text, start)
        if error is not None:
            return ParseResult((), error)
        if not isinstance(value, dict) or "importance" not in value:
            return ParseResult((), ParseError(start, f'expected {{"importance": n}}, got '
                                                     f"{str(value)[:40]!r}"))
        raw = value["importance"]
        score = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            score = raw
        elif isinstance(raw, float) and raw.is_integer():
            score = int(raw)
        elif isinstance(raw, str) and raw.strip().isdecimal() and len(raw.strip()) <= 9:
            score = int(raw.strip())
        if score is None or not 0 <= score <= self.max_score:
            return ParseResult((), ParseError(start, f"expected an integer importance in "
                                                     f"[0, {self.max_score}], got {raw!r}"))
        return ParseResult((Rate(score),), spans=((start, stop),), end=stop)

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render one :class:`Rate` op as ``{"importance": n}``.

        Raises:
            TypeError: ``ops`` is not exactly one ``Rate`` (a programming error).
        """
        if len(ops) != 1 or not isinstance(ops[0], Rate):
            raise TypeError(f"an importance action is exactly one Rate op, got {list(ops)!r}")
        return f'{{"importance": {ops[0].score}}}'
