"""Hermes-style tool calls for Mem-α's memory tools.

Canonical form (Hermes / Qwen chat templates, as Mem-α's agent emits them), one block per call::

    <tool_call>{"name": "new_memory_insert", "arguments": {"memory_type": "semantic",
                "content": "..."}}</tool_call>

Tools and their arguments:

* ``new_memory_insert(memory_type, content)`` → :class:`~memgym.ops.MemoryInsert`
* ``memory_update(memory_type, new_content, memory_id?)`` → :class:`~memgym.ops.MemoryUpdate`
* ``memory_delete(memory_type, memory_id?)`` → :class:`~memgym.ops.MemoryDelete`

Accepted leniently, because small policies drift: prose between blocks, a code fence inside a
block, ``arguments`` given as a JSON string, an integer ``memory_id``, a missing
``</tool_call>`` on the last block, extra arguments (ignored). Text with no ``<tool_call>`` at
all is a valid action with zero calls. A block that is not a known tool with string arguments
of the right names makes the whole action a :class:`ParseError`. Whether ``memory_type`` names
a real memory and ``memory_id`` an existing entry is for the memory to judge (a rejected call),
not the codec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult
from memgym.ops import MemoryDelete, MemoryInsert, MemoryOp, MemoryUpdate

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
# tool name → (required string arguments, optional id argument?)
_TOOLS: dict[str, tuple[tuple[str, ...], bool]] = {
    "new_memory_insert": (("memory_type", "content"), False),
    "memory_update": (("memory_type", "new_content"), True),
    "memory_delete": (("memory_type",), True),
}


def _call_to_op(call: object) -> MemoryOp | str:
    """One decoded tool-call object → op, or a reason string on failure."""
    if not isinstance(call, dict):
        return f"expected a JSON object, got {type(call).__name__}"
    name, args = call.get("name"), call.get("arguments", {})
    if name not in _TOOLS:
        return f"expected a tool name in {sorted(_TOOLS)}, got {name!r}"
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except (json.JSONDecodeError, RecursionError):
            return f"{name}: 'arguments' is a string that is not a JSON object"
    if not isinstance(args, dict):
        return f"{name}: expected 'arguments' to be an object, got {type(args).__name__}"
    required, has_id = _TOOLS[name]
    for key in required:
        if not isinstance(args.get(key), str):
            return f"{name}: needs a string {key!r}, got {args.get(key)!r}"
    memory_id = args.get("memory_id")
    if has_id and memory_id is not None:
        if isinstance(memory_id, bool) or not isinstance(memory_id, str | int):
            return f"{name}: 'memory_id' must be a string or integer, got {memory_id!r}"
        memory_id = str(memory_id)
    if name == "new_memory_insert":
        return MemoryInsert(args["memory_type"], args["content"])
    if name == "memory_update":
        return MemoryUpdate(args["memory_type"], args["new_content"], memory_id)
    return MemoryDelete(args["memory_type"], memory_id)


class HermesToolCodec:
    """Hermes ``<tool_call>`` blocks ⇄ ``MemoryInsert``/``MemoryUpdate``/``MemoryDelete`` ops
    (see module docs)."""

    name = "hermes"

    def decode(self, text: str) -> ParseResult:
        """Parse every ``<tool_call>`` block of ``text``; returns a :class:`ParseResult`, never
        raises. The error position is the offset of the failing block's body (or of the JSON
        error inside it)."""
        ops = []
        for match in _BLOCK.finditer(text):
            start, body = match.start(1), match.group(1)
            stripped = _FENCE.sub("", body.strip())
            offset = start + body.find(stripped[:1]) if stripped else start
            try:
                call = json.loads(stripped)
            except json.JSONDecodeError as exc:
                return ParseResult((), ParseError(offset + exc.pos, f"invalid JSON: {exc.msg}"))
            except RecursionError:
                return ParseResult((), ParseError(offset, "invalid JSON: nested too deeply"))
            op = _call_to_op(call)
            if isinstance(op, str):
                return ParseResult((), ParseError(start, op))
            ops.append(op)
        return ParseResult(tuple(ops))

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops as one ``<tool_call>`` block per line (``memory_id`` omitted when None).

        Raises:
            TypeError: An op is not a Mem-α memory tool (e.g. ``Add``); a programming error.
        """
        blocks = []
        for op in ops:
            if isinstance(op, MemoryInsert):
                call = {"name": "new_memory_insert",
                        "arguments": {"memory_type": op.memory_type, "content": op.content}}
            elif isinstance(op, MemoryUpdate):
                call = {"name": "memory_update",
                        "arguments": {"memory_type": op.memory_type,
                                      "new_content": op.new_content}}
            elif isinstance(op, MemoryDelete):
                call = {"name": "memory_delete", "arguments": {"memory_type": op.memory_type}}
            else:
                raise TypeError(f"Hermes memory tools have no call for {type(op).__name__}")
            memory_id = getattr(op, "memory_id", None)
            if memory_id is not None:
                call["arguments"]["memory_id"] = memory_id
            blocks.append(f"<tool_call>{json.dumps(call, ensure_ascii=False)}</tool_call>")
        return "\n".join(blocks)
