"""Mem-α's memory tools as Hermes-style tool calls (see :mod:`memgym.codecs.hermes`).

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

from collections.abc import Sequence
from functools import partial

from memgym.codecs.base import ParseResult, checks_unicode
from memgym.codecs.hermes import decode_tool_calls, encode_tool_call
from memgym.ops import MemoryDelete, MemoryInsert, MemoryOp, MemoryUpdate

# tool name → (required string arguments, optional id argument?, op)
_SIGNATURES: dict[str, tuple[tuple[str, ...], bool, type]] = {
    "new_memory_insert": (("memory_type", "content"), False, MemoryInsert),
    "memory_update": (("memory_type", "new_content"), True, MemoryUpdate),
    "memory_delete": (("memory_type",), True, MemoryDelete),
}


def _memory_tool(name: str, args: dict) -> MemoryOp | str:
    """The ``arguments`` of tool ``name`` → its op, or a reason string on failure."""
    required, has_id, op = _SIGNATURES[name]
    for key in required:
        if not isinstance(args.get(key), str):
            return f"{name}: needs a string {key!r}, got {args.get(key)!r}"
    if not has_id:
        return op(*(args[key] for key in required))
    memory_id = args.get("memory_id")
    if memory_id is not None:
        if isinstance(memory_id, bool) or not isinstance(memory_id, str | int):
            return f"{name}: 'memory_id' must be a string or integer, got {memory_id!r}"
        memory_id = str(memory_id)
    return op(*(args[key] for key in required), memory_id)


_TOOLS = {name: partial(_memory_tool, name) for name in _SIGNATURES}


class MemAlphaCodec:
    """Mem-α's Hermes ``<tool_call>`` blocks ⇄ ``MemoryInsert``/``MemoryUpdate``/``MemoryDelete``
    ops (see module docs)."""

    name = "mem_alpha"

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse every ``<tool_call>`` block of ``text``; returns a :class:`ParseResult`, never
        raises. The error position is the offset of the failing block's body (or of the JSON
        error inside it)."""
        return decode_tool_calls(text, _TOOLS)

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops as one ``<tool_call>`` block per line (``memory_id`` omitted when None).

        Raises:
            TypeError: An op is not a Mem-α memory tool (e.g. ``Add``); a programming error.
        """
        blocks = []
        for op in ops:
            if isinstance(op, MemoryInsert):
                name, args = "new_memory_insert", {"memory_type": op.memory_type,
                                                   "content": op.content}
            elif isinstance(op, MemoryUpdate):
                name, args = "memory_update", {"memory_type": op.memory_type,
                                               "new_content": op.new_content}
            elif isinstance(op, MemoryDelete):
                name, args = "memory_delete", {"memory_type": op.memory_type}
            else:
                raise TypeError(f"Mem-α memory tools have no call for {type(op).__name__}")
            memory_id = getattr(op, "memory_id", None)
            if memory_id is not None:
                args["memory_id"] = memory_id
            blocks.append(encode_tool_call(name, args))
        return "\n".join(blocks)
