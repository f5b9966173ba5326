"""The codec protocol and the typed parse-failure value."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from memgym.ops import MemoryOp


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


class Codec(Protocol):
    """Text ⇄ ops. ``decode`` never raises on any ``str``."""

    name: str

    def decode(self, text: str) -> ParseResult:
        """Parse an action text."""
        ...

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops as the text a policy would emit; ``decode(encode(ops)).ops == ops``."""
        ...
