"""MemAct's action format: Hermes tool calls for ``search`` / ``prune_context``, or a final answer.

Canonical forms (one assistant message)::

    <tool_call>{"name": "search", "arguments": {"query": "...", "topk": 3}}</tool_call>
    <tool_call>{"name": "prune_context", "arguments": {"memory": "...", "delete_ids": ["..."]}}
    </tool_call>
    FINAL_ANSWER: <answer>

Several ``search`` calls may share a message; ``prune_context`` must be the only call of its
message. Accepted leniently, because small policies drift: a missing ``</tool_call>`` (the call
runs to the end of the text), prose around the calls, ``arguments`` given as a JSON string,
``topk`` as a numeric string or an integral float (default 3), ``delete_ids`` as one string
(split on commas and whitespace) or integers, a bare ``{"name": ...}`` object without tags.
``FINAL_ANSWER:`` counts only in a message with no ``<tool_call>`` tag; the answer is the first
non-empty line after it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial

from memgym.codecs.base import ParseError, ParseResult, checks_unicode
from memgym.codecs.hermes import decode_tool_calls, encode_tool_call, tool_call_spans
from memgym.ops import Answer, EditContext, MemoryOp, Retrieve

FINAL_MARK = "FINAL_ANSWER:"
_SPLIT_IDS = re.compile(r"[\s,]+")


def _search(args: dict, default_topk: int) -> Retrieve | str:
    """``search`` arguments → :class:`Retrieve`, or a reason string on failure."""
    query, topk = args.get("query"), args.get("topk", default_topk)
    if not isinstance(query, str):
        return f"search needs a string 'query', got {type(query).__name__}"
    if ((isinstance(topk, str) and topk.strip().isdigit())
            or (isinstance(topk, float) and topk.is_integer())):
        topk = int(topk)
    if isinstance(topk, bool) or not isinstance(topk, int):
        return f"search 'topk' must be an integer, got {topk!r}"[:200]
    return Retrieve(query, topk)


def _prune_context(args: dict) -> EditContext | str:
    """``prune_context`` arguments → :class:`EditContext`, or a reason string on failure."""
    memory, ids = args.get("memory", ""), args.get("delete_ids", [])
    if not isinstance(memory, str):
        return f"prune_context 'memory' must be a string, got {type(memory).__name__}"
    if isinstance(ids, str):
        ids = [i for i in _SPLIT_IDS.split(ids) if i]
    if not isinstance(ids, list) or not all(
            isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        return "prune_context 'delete_ids' must be a list of id strings"
    return EditContext(tuple(str(i).strip() for i in ids), memory)


class MemActCodec:
    """MemAct text ⇄ ``Retrieve`` / ``EditContext`` / ``Answer`` ops (see module docs).

    Args:
        default_topk: ``topk`` of a search call that gives none.
        max_calls: Most tool calls one message may hold.
    """

    name = "memact"

    def __init__(self, default_topk: int = 3, max_calls: int = 4) -> None:
        self.default_topk, self.max_calls = default_topk, max_calls
        self._tools = {"search": partial(_search, default_topk=default_topk),
                       "prune_context": _prune_context}

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises."""
        spans = tool_call_spans(text)
        if not spans:
            mark = text.find(FINAL_MARK)
            if mark >= 0:
                start = mark + len(FINAL_MARK)
                rest = text[start:].strip()
                line = rest.splitlines()[0].strip() if rest else ""
                end = text.find(line, start) + len(line) if line else len(text)
                return ParseResult((Answer(line),), end=end)
            if text.find("{") < 0:
                return ParseResult((), ParseError(
                    0, f"expected a <tool_call> or '{FINAL_MARK} <answer>'"))
            spans = [(0, len(text))]
        if len(spans) > self.max_calls:
            return ParseResult((), ParseError(
                0, f"at most {self.max_calls} tool calls per message, got {len(spans)}"))
        parsed = decode_tool_calls(text, self._tools, spans=spans, prose=True)
        if len(parsed.ops) > 1 and any(isinstance(op, EditContext) for op in parsed.ops):
            return ParseResult((), ParseError(
                0, "prune_context must be the only tool call of its message"))
        return parsed

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops in the canonical form, one per line.

        Raises:
            TypeError: An op has no MemAct form (e.g. ``Add``); that is a programming error.
        """
        lines = []
        for op in ops:
            if isinstance(op, Retrieve):
                lines.append(encode_tool_call("search", {"query": op.query, "topk": op.k}))
            elif isinstance(op, EditContext):
                lines.append(encode_tool_call("prune_context", {
                    "memory": op.summary, "delete_ids": list(op.delete_ids)}))
            elif isinstance(op, Answer):
                lines.append(f"{FINAL_MARK} {op.text}")
            else:
                raise TypeError(f"MemAct has no action for {type(op).__name__}")
        return "\n".join(lines)
