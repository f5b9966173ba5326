"""The codec protocol and the typed parse-failure value."""

from __future__ import annotations

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
    """Ops parsed from one action text, or the error that prevented it (then ``ops`` is empty)."""

    ops: tuple[MemoryOp, ...]
    error: ParseError | None = None

    @property
    def ok(self) -> bool:
        """True when the text parsed."""
        return self.error is None


class Codec(Protocol):
    """Text ⇄ ops. ``decode`` never raises on any ``str``."""

    name: str

    def decode(self, text: str) -> ParseResult:
        """Parse an action text."""
        ...

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops as the text a policy would emit; ``decode(encode(ops)).ops == ops``."""
        ...
