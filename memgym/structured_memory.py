"""Mem-α's structured memory: a core paragraph, a list of semantic facts, a list of episodic
events.

The policy edits it with :class:`~memgym.ops.MemoryInsert`, :class:`~memgym.ops.MemoryUpdate`
and :class:`~memgym.ops.MemoryDelete`; applying an op never raises, it returns an
:class:`~memgym.ops.OpResult` that is either applied or rejected with a reason (the rejection
is what Mem-α's "fraction of successful calls" counts). Semantic and episodic items get 4-char
ids from a counter (``0000``, ``0001``, ... in base 36), so ids are deterministic and never
reused within an episode. ``snapshot()`` / ``restore()`` make replay and forking exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from memgym.ops import MemoryDelete, MemoryInsert, MemoryOp, MemoryUpdate, OpResult

MEMORY_TYPES = ("core", "semantic", "episodic")
LISTS = ("semantic", "episodic")


@dataclass(frozen=True)
class MemoryItem:
    """One semantic fact or episodic event.

    Attributes:
        id: 4-char base-36 id assigned by the memory.
        content: The text the policy wrote.
        timestamp: For episodic events, the date of the chunk it was written at (empty if the
            stream has no dates); empty for semantic facts.
        created_step: Env step (0-based) of the insert.
        updated_step: Env step of the last update.
    """

    id: str
    content: str
    timestamp: str
    created_step: int
    updated_step: int

    def render(self) -> str:
        """``content``, prefixed by ``[timestamp] `` when there is one."""
        return f"[{self.timestamp}] {self.content}" if self.timestamp else self.content


@dataclass(frozen=True)
class StructuredSnapshot:
    """Immutable state of a :class:`StructuredMemory`."""

    core: str
    semantic: tuple[MemoryItem, ...]
    episodic: tuple[MemoryItem, ...]
    next_id: int


class StructuredMemory:
    """Core + semantic + episodic memory edited by Mem-α's three tools.

    Rules (a call that breaks one is rejected, the memory is unchanged):

    * ``core`` is one paragraph: ``memory_update`` replaces it (``memory_id`` is ignored),
      ``memory_delete`` clears it, ``new_memory_insert`` is rejected.
    * ``semantic`` / ``episodic``: insert appends an item with a new id; update and delete need
      the ``memory_id`` of an existing item of that type.
    * Content is stripped; empty content, content over its limit, an unknown ``memory_type``
      and an insert into a full list are rejected.

    Args:
        max_core_chars: Longest core paragraph (characters).
        max_item_chars: Longest semantic/episodic item (characters).
        max_items: Capacity of each of the semantic and episodic lists.
    """

    def __init__(self, max_core_chars: int = 512, max_item_chars: int = 512,
                 max_items: int = 200) -> None:
        self.max_core_chars, self.max_item_chars = max_core_chars, max_item_chars
        self.max_items = max_items
        self.core = ""
        self._lists: dict[str, dict[str, MemoryItem]] = {name: {} for name in LISTS}
        self._next_id = 0

    def items(self, memory_type: str) -> list[MemoryItem]:
        """The items of ``semantic`` or ``episodic``, oldest first."""
        return list(self._lists[memory_type].values())

    def texts(self) -> list[str]:
        """Every memory as text: the core paragraph (if any) first, then semantic facts, then
        episodic events (rendered with their timestamp)."""
        return ([self.core] if self.core else []) + [
            item.render() for name in LISTS for item in self._lists[name].values()]

    def num_tokens(self) -> int:
        """Whitespace tokens of all memory (what Mem-α's compression term measures)."""
        return sum(len(text.split()) for text in self.texts())

    def render(self, latest: int = 20) -> str:
        """The three blocks shown to the policy: ``<core_memory>``, ``<semantic_memory>`` and
        ``<episodic_memory>``, each list as ``[id] content`` lines (its ``latest`` newest)."""
        blocks = [f"<core_memory>\n{self.core or '(empty)'}\n</core_memory>"]
        for name in LISTS:
            shown = self.items(name)[-latest:] if latest > 0 else []
            lines = "\n".join(f"[{item.id}] {item.render()}" for item in shown) or "(empty)"
            blocks.append(f"<{name}_memory>\n{lines}\n</{name}_memory>")
        return "\n".join(blocks)

    def _check(self, memory_type: str, content: str | None) -> str:
        """Reason to reject a call on ``memory_type`` with ``content``; empty when fine."""
        if memory_type not in MEMORY_TYPES:
            return f"memory_type must be one of {list(MEMORY_TYPES)}, got {memory_type!r}"
        if content is None:
            return ""
        limit = self.max_core_chars if memory_type == "core" else self.max_item_chars
        if not content:
            return "empty content"
        if len(content) > limit:
            return f"content has {len(content)} chars, limit {limit}"
        return ""

    def apply(self, op: MemoryOp, step: int, timestamp: str = "") -> OpResult:
        """Apply one op; never raises, returns a rejection instead.

        Args:
            op: A :class:`MemoryInsert`, :class:`MemoryUpdate` or :class:`MemoryDelete`; other
                op kinds are rejected.
            step: Current env step, recorded on inserted/updated items.
            timestamp: Date of the current chunk, recorded on episodic inserts (an update keeps
                the event's timestamp).

        Returns:
            The :class:`OpResult` (``id``: the item's id; ``"core"`` for the core paragraph).
        """
        if not isinstance(op, MemoryInsert | MemoryUpdate | MemoryDelete):
            return OpResult(op, False, None, f"structured memory cannot apply {op.kind!r}")
        content = None if isinstance(op, MemoryDelete) else (
            op.content if isinstance(op, MemoryInsert) else op.new_content).strip()
        memory_id = None if isinstance(op, MemoryInsert) else op.memory_id
        if reason := self._check(op.memory_type, content):
            return OpResult(op, False, memory_id, reason)
        stamp = timestamp if op.memory_type == "episodic" else ""
        if op.memory_type == "core":
            if isinstance(op, MemoryInsert):
                return OpResult(op, False, None, "core memory is one paragraph: use memory_update")
            if isinstance(op, MemoryDelete) and not self.core:
                return OpResult(op, False, "core", "core memory is already empty")
            self.core = content or ""
            return OpResult(op, True, "core")
        items = self._lists[op.memory_type]
        if isinstance(op, MemoryInsert):
            if len(items) >= self.max_items:
                return OpResult(op, False, None,
                                f"{op.memory_type} memory full ({self.max_items} items)")
            new_id = np.base_repr(self._next_id, 36).lower().zfill(4)
            self._next_id += 1
            items[new_id] = MemoryItem(new_id, content or "", stamp, step, step)
            return OpResult(op, True, new_id)
        if memory_id is None:
            return OpResult(op, False, None, f"{op.kind} on {op.memory_type} needs a memory_id")
        if memory_id not in items:
            return OpResult(op, False, memory_id,
                            f"no {op.memory_type} item with id {memory_id!r}")
        if isinstance(op, MemoryDelete):
            del items[memory_id]
        else:
            items[memory_id] = replace(items[memory_id], content=content or "",
                                       updated_step=step)
        return OpResult(op, True, memory_id)

    def apply_all(self, ops: Iterable[MemoryOp], step: int, timestamp: str = "") -> list[OpResult]:
        """Apply ops in order; see :meth:`apply`."""
        return [self.apply(op, step, timestamp) for op in ops]

    def snapshot(self) -> StructuredSnapshot:
        """Immutable copy of the current state."""
        return StructuredSnapshot(self.core, tuple(self._lists["semantic"].values()),
                                  tuple(self._lists["episodic"].values()), self._next_id)

    def restore(self, snap: StructuredSnapshot) -> None:
        """Make the memory equal to ``snap`` exactly (contents, ids, order, next id)."""
        self.core = snap.core
        self._lists = {"semantic": {i.id: i for i in snap.semantic},
                       "episodic": {i.id: i for i in snap.episodic}}
        self._next_id = snap.next_id
