"""The codec protocol and the typed parse-failure value."""

from __future__ import annotations

import functools
import json
import re
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
    ``end`` is the offset just past the action proper (the JSON value, the last closing tag):
    what follows it is text after the action, which :func:`strict_result` refuses; None when the
    action runs to the end of the text.
    """

    ops: tuple[MemoryOp, ...]
    error: ParseError | None = None
    spans: tuple[tuple[int, int], ...] = ()
    end: int | None = None

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


class CutAction(str):
    """An action text that the engine cut at ``max_new_tokens`` (no end-of-turn token).

    A ``str`` (every env and ``Text`` space takes it as the text it is) that marks the cut, so
    a strict env scores it as a format error; :attr:`memgym.engine.Completion.action` gives it
    for a completion whose ``finish_reason`` is ``"length"``, and replay rebuilds it from the
    step's recorded ``info["cut"]``.
    """

    __slots__ = ()


# op fields that hold text the policy wrote (ids, memory types and ranks are not copied prose)
_PROSE_FIELDS = ("text", "query", "summary", "content", "new_content")
_CLOSING_FENCE = "```"
_WORD = re.compile(r"\w+")


def _words(text: str) -> str:
    """The lowercased words of ``text`` (runs of letters and digits), space-separated."""
    return " ".join(_WORD.findall(text.lower()))


@functools.lru_cache(maxsize=16)
def _instruction_words(instructions: str) -> str:
    """:func:`_words` of an env's instructions (the same few texts every step: cached)."""
    return _words(instructions)


def _copied(value: str, instructions: str, words: str) -> bool:
    """Whether an op's text copies the instructions (``words``: their :func:`_words`): its
    words (two or more) are a run of the instructions' words, or it is verbatim instruction
    text that is not plain words (a placeholder such as ``<new fact>`` or ``...``)."""
    raw = value.strip()
    mine = _words(raw)
    if mine.count(" ") >= 1 and f" {mine} " in f" {words} ":
        return True
    return bool(raw) and not raw.replace(" ", "").isalnum() and raw in instructions


def strict_result(result: ParseResult, text: str, *, cut: bool = False,
                  instructions: str = "") -> ParseResult:
    """A codec's parse under the strict rules a reward needs (issue 18): a completion cut at
    ``max_new_tokens``, text after the action and op text copied from the instructions are
    format errors, recorded like parse errors.

    Args:
        result: The codec's lenient :class:`ParseResult` of ``text``.
        text: The action text.
        cut: The engine cut the completion at ``max_new_tokens`` (:class:`CutAction`).
        instructions: The instructions the policy was shown; an op whose prose field
            (``text``, ``query``, ``summary``, ``content``, ``new_content``) copies them is an
            error (see :func:`_copied`).

    Returns:
        ``result`` unchanged when it passes, else an empty result whose error says which rule
        failed (checked in that order, after the codec's own error).
    """
    if cut:
        return ParseResult((), ParseError(len(text), "completion cut at max_new_tokens "
                                                     "(no end of turn)"))
    if result.error is not None:
        return result
    if result.end is not None:
        rest = text[result.end:].strip()
        if rest.startswith(_CLOSING_FENCE):  # a fenced action's closing fence
            rest = rest[len(_CLOSING_FENCE):].strip()
        if rest:
            return ParseResult((), ParseError(result.end, f"text after the action: "
                                                          f"{rest[:40]!r}"))
    if instructions and result.ops:
        words = _instruction_words(instructions)
        for op in result.ops:
            for name in _PROSE_FIELDS:
                value = getattr(op, name, None)
                if isinstance(value, str) and _copied(value, instructions, words):
                    return ParseResult((), ParseError(
                        max(text.find(value), 0), f"{type(op).__name__}.{name} copies the "
                                                  f"instructions: {value[:40]!r}"))
    return result
