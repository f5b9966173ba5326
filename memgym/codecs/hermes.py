"""Hermes-style tool calls: the ``<tool_call>`` envelope shared by the tool-calling codecs.

Canonical form (Hermes / Qwen chat templates), one block per call::

    <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>

This module finds the blocks, decodes each one's JSON envelope and hands its ``arguments``
object to the named tool, a function that returns the op or the reason the arguments are wrong;
:mod:`memgym.codecs.mem_alpha` and :mod:`memgym.codecs.memact` define the tools and add their
own rules. Accepted leniently, because small policies drift: text between blocks, a missing
``</tool_call>`` on the last block (it runs to the end of the text), ``arguments`` given as a
JSON string or left out (``{}``). How a block's body may hold the call is the codec's choice
(``prose`` of :func:`decode_tool_calls`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from memgym.codecs.base import ParseError, ParseResult, decode_json, decode_json_span
from memgym.ops import Answer, MemoryOp, MemorySearch, Noop, Retrieve

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_INVALID = "invalid JSON in tool call"
_FENCE_OPEN = re.compile(r"```[a-zA-Z]*\s*")

_NOT_WRITES = (Retrieve, MemorySearch, Answer, Noop)  # reads and answers: not memory-op payloads

Tool = Callable[[dict], MemoryOp | str]
"""A tool: its ``arguments`` object → the op, or a reason string when they are wrong."""


def tool_call_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of each ``<tool_call>`` block's body in ``text``, in order; an
    unclosed last block runs to the end of the text."""
    spans, pos = [], text.find(OPEN)
    while pos >= 0:
        end = text.find(CLOSE, pos)
        spans.append((pos + len(OPEN), len(text) if end < 0 else end))
        pos = -1 if end < 0 else text.find(OPEN, end)
    return spans


def _unfenced(text: str, start: int, end: int) -> tuple[int, int]:
    """Span of ``text[start:end]`` less surrounding whitespace and a Markdown code fence (an
    opening ```` ```lang ```` and/or a closing ```` ``` ````); linear time."""
    body = text[start:end]
    lo = start + len(body) - len(body.lstrip())
    hi = lo + len(body.strip())
    if text.startswith("```", lo, hi):
        lo = _FENCE_OPEN.match(text, lo, hi).end()
    if hi - 3 >= lo and text.startswith("```", hi - 3, hi):
        hi = lo + len(text[lo:hi - 3].rstrip())
    return lo, hi


def _call_json(text: str, start: int, end: int, prose: bool
               ) -> tuple[object, int, ParseError | None]:
    """The JSON value of the block body ``text[start:end]`` (see :func:`decode_tool_calls`)
    and the offset just past it."""
    if prose:
        brace = text.find("{", start, end)
        if brace < 0:
            return None, start, ParseError(start, "expected a JSON object in the tool call")
        return decode_json_span(text, brace, end, what=_INVALID)
    lo, hi = _unfenced(text, start, end)
    value, error = decode_json(text, lo, hi, whole=True, what=_INVALID)
    return value, end, error


def _call_to_op(call: object, tools: Mapping[str, Tool]) -> MemoryOp | str:
    """One decoded ``{"name", "arguments"}`` object → its tool's op, or a reason string."""
    if not isinstance(call, dict):
        return f"expected a tool-call object, got {type(call).__name__}"
    name, args = call.get("name"), call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            return "'arguments' is a string that is not a JSON object"
    if not isinstance(args, dict):
        return f"'arguments' must be an object, got {type(args).__name__}"
    tool = tools.get(name) if isinstance(name, str) else None
    if tool is None:
        return f"unknown tool {name!r}; expected {' or '.join(map(repr, tools))}"[:200]
    return tool(args)


def decode_tool_calls(text: str, tools: Mapping[str, Tool], *,
                      spans: Sequence[tuple[int, int]] | None = None,
                      prose: bool = False) -> ParseResult:
    """One op per tool call of ``text``, in order; returns a :class:`ParseResult`, never raises.

    Args:
        text: The action text.
        tools: Tool name → :data:`Tool`; any other name is an error.
        spans: The bodies to decode (default: :func:`tool_call_spans`; e.g. ``[(0, len(text))]``
            for a bare call without tags).
        prose: How a body holds its call. False: the body, less surrounding whitespace and a
            Markdown code fence, is exactly one JSON value. True: its first ``{`` starts the
            call's JSON object and any text around that object is ignored.

    The result's ``spans`` are the bodies of the calls that write memory (every op but
    ``Retrieve``, ``Answer`` and ``Noop``), for memory-token credit.

    The result's ``end`` is the offset just past the last call (its ``</tool_call>``, else its
    JSON value; 0 without calls): what follows is text after the action.

    The first failing call makes the whole text an error, positioned at the offset of its JSON
    error, else at the start of its body. No call at all is a valid empty action.
    """
    ops, writes, last = [], [], 0
    for start, end in tool_call_spans(text) if spans is None else spans:
        call, stop, error = _call_json(text, start, end, prose)
        if error is not None:
            return ParseResult((), error)
        last = end + len(CLOSE) if text.startswith(CLOSE, end) else stop
        op = _call_to_op(call, tools)
        if isinstance(op, str):
            return ParseResult((), ParseError(start, op))
        ops.append(op)
        if not isinstance(op, _NOT_WRITES):
            writes.append((start, end))
    return ParseResult(tuple(ops), spans=tuple(writes), end=last)


def encode_tool_call(name: str, arguments: dict) -> str:
    """The canonical ``<tool_call>`` block of one call (JSON, non-ASCII kept as is)."""
    call = {"name": name, "arguments": arguments}
    return f"{OPEN}{json.dumps(call, ensure_ascii=False)}{CLOSE}"
