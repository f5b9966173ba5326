"""The Mem0 / Memory-R1 JSON action format.

Canonical form (Mem0's update-memory prompt, used by Memory-R1)::

    {"memory": [{"id": "3", "text": "...", "event": "ADD|UPDATE|DELETE|NONE", "old_memory": "..."}]}

Accepted leniently, because small policies drift: code fences and prose around the JSON, a bare
list of items, or one bare item. ``id`` may be a string or an integer; it is ignored for ADD
(the bank assigns ids) and optional for NONE; ``old_memory`` is informational. A codec made with
``default_text`` (an env that stores the current stream item, e.g. ``keep_turns``) reads an ADD or
UPDATE without ``text`` as that text, and writes ops whose text equals it without ``text``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult, checks_unicode, decode_json_span
from memgym.ops import Add, Delete, MemoryOp, Noop, Update

_EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")


def _item_to_op(item: object, index: int, default_text: str | None) -> MemoryOp | str:
    """One memory item → op, or a reason string on failure."""
    if not isinstance(item, dict):
        return f"memory[{index}]: expected an object, got {type(item).__name__}"
    event = item.get("event")
    if not isinstance(event, str) or event.upper() not in _EVENTS:
        return f"memory[{index}]: expected event in {list(_EVENTS)}, got {event!r}"
    event = event.upper()
    if event == "NONE":
        return Noop()
    raw_id = item.get("id")
    text = item.get("text", default_text)
    if event in ("ADD", "UPDATE") and not isinstance(text, str):
        return f"memory[{index}]: {event} needs a string 'text', got {text!r}"
    if event == "ADD":
        return Add(text)  # type: ignore[arg-type]
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        return f"memory[{index}]: {event} needs an 'id' (string or integer), got {raw_id!r}"
    if event == "UPDATE":
        return Update(str(raw_id), text)  # type: ignore[arg-type]
    return Delete(str(raw_id))


class Mem0JsonCodec:
    """Mem0/Memory-R1 JSON ⇄ ``Add``/``Update``/``Delete``/``Noop`` ops (see module docs)."""

    name = "mem0_json"

    def __init__(self, default_text: str | None = None) -> None:
        """Args:
            default_text: The text of an ADD / UPDATE that gives none (None: such an item is a
                parse error, Mem0's rule)."""
        self.default_text = default_text

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises.

        The first ``{`` or ``[`` starts the JSON value; text after the value is ignored (its
        offset is the result's ``end``, for :func:`~memgym.codecs.base.strict_result`). The value's
        character span is the result's one memory-op span.
        """
        starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
        if not starts:
            return ParseResult((), ParseError(0, "no JSON object or list found"))
        start = min(starts)
        value, stop, error = decode_json_span(text, start)
        if error is not None:
            return ParseResult((), error)
        if isinstance(value, dict) and "memory" in value:
            items = value["memory"]
        elif isinstance(value, dict) and "event" in value:
            items = [value]
        else:
            items = value
        if not isinstance(items, list):
            found = type(items).__name__
            return ParseResult((), ParseError(
                start, f'expected {{"memory": [...]}}, a list or one item, got {found}'))
        ops = []
        for index, item in enumerate(items):
            op = _item_to_op(item, index, self.default_text)
            if isinstance(op, str):
                return ParseResult((), ParseError(start, op))
            ops.append(op)
        return ParseResult(tuple(ops), spans=((start, stop),), end=stop)

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops in the canonical form (without ``text`` where it is ``default_text``).

        Raises:
            TypeError: An op has no Mem0 event (e.g. ``Answer``); that is a programming error.
        """
        items: list[dict] = []
        for op in ops:
            if isinstance(op, Add | Update):
                text = {} if op.text == self.default_text else {"text": op.text}
            if isinstance(op, Add):
                items.append({"event": "ADD", **text})
            elif isinstance(op, Update):
                items.append({"id": op.id, "event": "UPDATE", **text})
            elif isinstance(op, Delete):
                items.append({"id": op.id, "event": "DELETE"})
            elif isinstance(op, Noop):
                items.append({"event": "NONE"})
            else:
                raise TypeError(f"Mem0 JSON has no event for {type(op).__name__}")
        return json.dumps({"memory": items}, ensure_ascii=False)
