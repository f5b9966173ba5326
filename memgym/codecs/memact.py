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

import json
import re
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult
from memgym.ops import Answer, EditContext, MemoryOp, Retrieve

FINAL_MARK = "FINAL_ANSWER:"
_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_SPLIT_IDS = re.compile(r"[\s,]+")


def _call_to_op(value: object, default_topk: int) -> MemoryOp | str:
    """One decoded ``{"name", "arguments"}`` object → op, or a reason string on failure."""
    if not isinstance(value, dict):
        return f"expected a tool-call object, got {type(value).__name__}"
    name, args = value.get("name"), value.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            return "'arguments' is a string that is not a JSON object"
    if not isinstance(args, dict):
        return f"'arguments' must be an object, got {type(args).__name__}"
    if name == "search":
        query, topk = args.get("query"), args.get("topk", default_topk)
        if not isinstance(query, str):
            return f"search needs a string 'query', got {type(query).__name__}"
        if ((isinstance(topk, str) and topk.strip().isdigit())
                or (isinstance(topk, float) and topk.is_integer())):
            topk = int(topk)
        if isinstance(topk, bool) or not isinstance(topk, int):
            return f"search 'topk' must be an integer, got {topk!r}"[:200]
        return Retrieve(query, topk)
    if name == "prune_context":
        memory, ids = args.get("memory", ""), args.get("delete_ids", [])
        if not isinstance(memory, str):
            return f"prune_context 'memory' must be a string, got {type(memory).__name__}"
        if isinstance(ids, str):
            ids = [i for i in _SPLIT_IDS.split(ids) if i]
        if not isinstance(ids, list) or not all(
                isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            return "prune_context 'delete_ids' must be a list of id strings"
        return EditContext(tuple(str(i).strip() for i in ids), memory)
    return f"unknown tool {name!r}; expected 'search' or 'prune_context'"[:200]


def _decode_json(text: str, start: int) -> tuple[object, None] | tuple[None, ParseError]:
    """The JSON value starting at the first ``{`` at or after ``start``, or a parse error."""
    brace = text.find("{", start)
    if brace < 0:
        return None, ParseError(start, "expected a JSON object in the tool call")
    try:
        return json.JSONDecoder().raw_decode(text, brace)[0], None
    except json.JSONDecodeError as exc:
        return None, ParseError(exc.pos, f"invalid JSON in tool call: {exc.msg}")
    except RecursionError:
        return None, ParseError(brace, "invalid JSON in tool call: nested too deeply")


class MemActCodec:
    """MemAct text ⇄ ``Retrieve`` / ``EditContext`` / ``Answer`` ops (see module docs).

    Args:
        default_topk: ``topk`` of a search call that gives none.
        max_calls: Most tool calls one message may hold.
    """

    name = "memact"

    def __init__(self, default_topk: int = 3, max_calls: int = 4) -> None:
        self.default_topk, self.max_calls = default_topk, max_calls

    def _calls(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` spans of the tagged calls; an unclosed last call runs to the end."""
        spans, pos = [], text.find(_OPEN)
        while pos >= 0:
            end = text.find(_CLOSE, pos)
            spans.append((pos + len(_OPEN), len(text) if end < 0 else end))
            pos = -1 if end < 0 else text.find(_OPEN, end)
        return spans

    def decode(self, text: str) -> ParseResult:
        """Parse ``text``; returns a :class:`ParseResult`, never raises."""
        spans = self._calls(text)
        if not spans:
            mark = text.find(FINAL_MARK)
            if mark >= 0:
                rest = text[mark + len(FINAL_MARK):].strip()
                return ParseResult((Answer(rest.splitlines()[0].strip() if rest else ""),))
            if text.find("{") < 0:
                return ParseResult((), ParseError(
                    0, f"expected a <tool_call> or '{FINAL_MARK} <answer>'"))
            spans = [(0, len(text))]
        if len(spans) > self.max_calls:
            return ParseResult((), ParseError(
                0, f"at most {self.max_calls} tool calls per message, got {len(spans)}"))
        ops: list[MemoryOp] = []
        for start, end in spans:
            value, error = _decode_json(text[:end], start)
            if error is not None:
                return ParseResult((), error)
            op = _call_to_op(value, self.default_topk)
            if isinstance(op, str):
                return ParseResult((), ParseError(start, op))
            ops.append(op)
        if len(ops) > 1 and any(isinstance(op, EditContext) for op in ops):
            return ParseResult((), ParseError(
                0, "prune_context must be the only tool call of its message"))
        return ParseResult(tuple(ops))

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops in the canonical form, one per line.

        Raises:
            TypeError: An op has no MemAct form (e.g. ``Add``); that is a programming error.
        """
        lines = []
        for op in ops:
            if isinstance(op, Retrieve):
                call = {"name": "search", "arguments": {"query": op.query, "topk": op.k}}
            elif isinstance(op, EditContext):
                call = {"name": "prune_context",
                        "arguments": {"memory": op.summary, "delete_ids": list(op.delete_ids)}}
            elif isinstance(op, Answer):
                lines.append(f"{FINAL_MARK} {op.text}")
                continue
            else:
                raise TypeError(f"MemAct has no action for {type(op).__name__}")
            lines.append(f"{_OPEN}{json.dumps(call, ensure_ascii=False)}{_CLOSE}")
        return "\n".join(lines)
