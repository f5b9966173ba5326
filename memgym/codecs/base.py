"""The codec protocol and the typed parse-failure value."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from memgym.ops import MemoryOp, op_to_dict
from memgym.surrogates import first_surrogate, lone_surrogate_escape


@dataclass(frozen=True)
class ParseError:
    """Why an action text could not be turned into ops. A value, never raised.

    Attributes:
        position: Character offset in the action text where parsing failed (0-based).
        reason: Human-readable cause, e.g. ``"expected a JSON object, found 'H'"``.
    """

    position: int
    reason: str

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"position": self.position, "reason": self.reason}


@dataclass(frozen=True)
class ParseResult:
    """Ops parsed from one action text, or the error that prevented it (then ``ops`` is empty).

    ``spans`` are the ``[start, end)`` character offsets of the memory-op payloads in the text
    (memory-token credit, HiMPO); empty when the codec does not record them or on an error.
    """

    ops: tuple[MemoryOp, ...]
    error: ParseError | None = None
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def ok(self) -> bool:
        """True when the text parsed."""
        return self.error is None


_DECODER = json.JSONDecoder()  # stateless: one instance serves every call


def decode_json_span(text: str, start: int = 0, end: int | None = None, *, whole: bool = False,
                     what: str = "invalid JSON") -> tuple[object, int, ParseError | None]:
    """As :func:`decode_json`, also giving the offset just past the value in ``text``
    (``start`` on an error)."""
    chunk = text[start:end]
    try:
        value, stop = (json.loads(chunk), len(chunk)) if whole else _DECODER.raw_decode(chunk)
    except json.JSONDecodeError as exc:
        return None, start, ParseError(start + exc.pos, f"{what}: {exc.msg}")
    except RecursionError:
        return None, start, ParseError(start, f"{what}: nested too deeply")
    return value, start + stop, None


def decode_json(text: str, start: int = 0, end: int | None = None, *, whole: bool = False,
                what: str = "invalid JSON") -> tuple[object, ParseError | None]:
    """Decode the JSON value that starts at ``text[start]``, within ``text[start:end]``.

    Args:
        text: The action text.
        start: Offset of the value's first character.
        end: Offset where the value's text ends at the latest (None: the end of ``text``).
        whole: ``text[start:end]`` must be the value alone (as :func:`json.loads`); otherwise
            text after the value is ignored.
        what: Prefix of the error reason.

    Returns:
        ``(value, None)``, or ``(None, error)`` positioned at the failure's offset in ``text``
        (at ``start`` when the value nests too deeply for the parser). Never raises.
    """
    value, _, error = decode_json_span(text, start, end, whole=whole, what=what)
    return value, error


_C = TypeVar("_C")


def checks_unicode(decode: Callable[[_C, str], ParseResult]) -> Callable[[_C, str], ParseResult]:
    """Decorator of a codec's ``decode``: text that is not valid Unicode is a parse error.

    A lone UTF-16 surrogate in the text gives ``ParseError(offset, "not valid Unicode: ...")``
    before the codec looks at it; one that the text spells as a JSON escape (``\\ud800``) and
    that reaches an op gives the same error at the escape's offset (one in an error reason is
    shown as its escape). So no op, op text or reason a codec returns holds a surrogate, and
    nothing an env accepts can make writing a trajectory fail.
    """
    @functools.wraps(decode)
    def checked(self: _C, text: str) -> ParseResult:
        pos = first_surrogate(text)
        if pos >= 0:
            return ParseResult((), ParseError(
                pos, f"not valid Unicode: lone surrogate U+{ord(text[pos]):04X} at offset {pos}"))
        result = decode(self, text)
        if "\\u" not in text:  # valid text without escapes decodes to valid text
            return result
        if result.error is not None:
            if first_surrogate(result.error.reason) < 0:
                return result
            reason = result.error.reason.encode("utf-8", "backslashreplace").decode()
            return replace(result, error=replace(result.error, reason=reason))
        values = json.dumps([op_to_dict(op) for op in result.ops], ensure_ascii=False)
        if first_surrogate(values) < 0:
            return result
        pos = max(lone_surrogate_escape(text), 0)
        return ParseResult((), ParseError(pos, "not valid Unicode: a JSON escape spells a lone "
                                               f"surrogate ({text[pos:pos + 6]!r})"))
    return checked


class Codec(Protocol):
    """Text ⇄ ops. ``decode`` never raises on any ``str``; text that is not valid Unicode (a
    lone surrogate, raw or as a JSON escape that reaches an op) is a parse error
    (:func:`checks_unicode`)."""

    name: str

    def decode(self, text: str) -> ParseResult:
        """Parse an action text."""
        ...

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops as the text a policy would emit; ``decode(encode(ops)).ops == ops``."""
        ...
