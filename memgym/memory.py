"""The memory bank: the environment state a memory-manager policy edits.

Entries carry their provenance (which stream item they came from) and the steps at which they
were created and last updated, so replay and memory metrics can reason about staleness.
``snapshot()`` returns an immutable value and ``restore()`` takes it back: replay and forking are
exact and cheap (entries are frozen, a snapshot shares them). The bank keeps a BM25 index of its
texts that every op edits in place (:meth:`MemoryBank.search`), so a step's retrieval cost does
not include re-indexing the bank.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from memgym.ops import Add, Delete, MemoryOp, Noop, OpResult, Update
from memgym.retrieval import BM25Index


@dataclass(frozen=True)
class MemoryEntry:
    """One stored memory.

    Attributes:
        id: Bank-assigned id, a decimal string ("0", "1", ...), never reused within an episode.
        text: The memory's content.
        created_step: Env step (0-based) at which the entry was added.
        updated_step: Env step of the last update (== created_step if never updated).
        provenance: Id of the stream item the entry came from (e.g. LoCoMo ``dia_id``).
    """

    id: str
    text: str
    created_step: int
    updated_step: int
    provenance: str


@dataclass(frozen=True)
class BankSnapshot:
    """Immutable state of a :class:`MemoryBank` (entries in insertion order, next id)."""

    entries: tuple[MemoryEntry, ...]
    next_id: int


class MemoryBank:
    """An ordered id → entry store edited by ADD / UPDATE / DELETE / NOOP ops (Mem0, Memory-R1).

    Args:
        max_entries: Capacity; an ADD beyond it is rejected. ``None`` means unbounded.
        max_text_chars: Longest text an entry may hold; longer ADD/UPDATE texts are rejected.
    """

    def __init__(self, max_entries: int | None = None, max_text_chars: int = 1000) -> None:
        self.max_entries = max_entries
        self.max_text_chars = max_text_chars
        self._entries: dict[str, MemoryEntry] = {}
        self._next_id = 0
        self.version = 0  # bumped on every change
        self._index: BM25Index | None = BM25Index()  # None: rebuild on the next search

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries.values())

    def get(self, entry_id: str) -> MemoryEntry | None:
        """The entry with ``entry_id``, or None."""
        return self._entries.get(entry_id)

    def entries(self) -> list[MemoryEntry]:
        """All entries in insertion order."""
        return list(self._entries.values())

    def apply(self, op: MemoryOp, step: int, provenance: str = "") -> OpResult:
        """Apply one op; never raises on a bad id or text, returns a rejection instead.

        Args:
            op: An :class:`Add`, :class:`Update`, :class:`Delete` or :class:`Noop`. Other op
                kinds are rejected (a memory bank cannot answer or edit a context).
            step: Current env step, recorded on created/updated entries.
            provenance: Stream item id recorded on created/updated entries.

        Returns:
            The :class:`OpResult`.
        """
        if isinstance(op, Noop):
            return OpResult(op, applied=True)
        if isinstance(op, Add | Update):
            text = op.text.strip()
            if not text:
                return OpResult(op, False, getattr(op, "id", None), "empty text")
            if len(text) > self.max_text_chars:
                return OpResult(op, False, getattr(op, "id", None),
                                f"text has {len(text)} chars, limit {self.max_text_chars}")
        if isinstance(op, Add):
            if self.max_entries is not None and len(self._entries) >= self.max_entries:
                return OpResult(op, False, None, f"bank full ({self.max_entries} entries)")
            entry_id = str(self._next_id)
            self._next_id += 1
            self._entries[entry_id] = MemoryEntry(entry_id, text, step, step, provenance)
            self.version += 1
            if self._index is not None:
                self._index.add(entry_id, text)
            return OpResult(op, True, entry_id)
        if isinstance(op, Update):
            old = self._entries.get(op.id)
            if old is None:
                return OpResult(op, False, op.id, f"no entry with id {op.id!r}")
            self._entries[op.id] = replace(old, text=text, updated_step=step,
                                           provenance=provenance or old.provenance)
            self.version += 1
            if self._index is not None:
                self._index.replace(op.id, text)
            return OpResult(op, True, op.id)
        if isinstance(op, Delete):
            if self._entries.pop(op.id, None) is None:
                return OpResult(op, False, op.id, f"no entry with id {op.id!r}")
            self.version += 1
            if self._index is not None:
                self._index.remove(op.id)
            return OpResult(op, True, op.id)
        return OpResult(op, False, None, f"a memory bank cannot apply {type(op).__name__}")

    def apply_all(self, ops: Iterable[MemoryOp], step: int, provenance: str = "") -> list[OpResult]:
        """Apply ops in order; see :meth:`apply`."""
        return [self.apply(op, step, provenance) for op in ops]

    def snapshot(self) -> BankSnapshot:
        """Immutable copy of the current state (O(n), entries shared)."""
        return BankSnapshot(tuple(self._entries.values()), self._next_id)

    def restore(self, snap: BankSnapshot) -> None:
        """Make the bank equal to ``snap`` exactly (ids, order, next id)."""
        self._entries = {e.id: e for e in snap.entries}
        self._next_id = snap.next_id
        self.version += 1
        self._index = None

    def search(self, query: str, k: int) -> list[tuple[MemoryEntry, float]]:
        """The top-``k`` entries for ``query`` by BM25 (:class:`~memgym.retrieval.BM25Index`).

        The index follows every op; after :meth:`restore` (or a copy) it is built once, on the
        next search.

        Args:
            query: Free text.
            k: Most entries to return (>= 0).

        Returns:
            ``(entry, score)`` pairs, best first, ties in bank order; only entries sharing a
            term with the query.
        """
        if self._index is None:
            self._index = BM25Index([e.text for e in self._entries.values()], list(self._entries))
        return [(self._entries[key], score) for key, score in self._index.search(query, k)]

    def __getstate__(self) -> dict:
        """Copies and pickles leave the index out (it is rebuilt on the next search)."""
        return {**self.__dict__, "_index": None}
