"""Typed memory operations and their results.

Operations are frozen dataclasses, so they hash, compare by value and serialize to plain dicts
(``to_dict`` / :func:`op_from_dict`). Applying an op never raises on a bad id: the memory returns
an :class:`OpResult` that says whether it was applied or rejected and why (DESIGN §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from typing import Literal

from memgym.errors import SchemaError


@dataclass(frozen=True)
class Add:
    """Store a new memory entry; the memory assigns its id."""

    text: str
    kind: Literal["add"] = field(default="add", init=False)


@dataclass(frozen=True)
class Update:
    """Replace the text of entry ``id`` (Mem0: keep the id, keep the more detailed version)."""

    id: str
    text: str
    kind: Literal["update"] = field(default="update", init=False)


@dataclass(frozen=True)
class Delete:
    """Remove entry ``id``."""

    id: str
    kind: Literal["delete"] = field(default="delete", init=False)


@dataclass(frozen=True)
class Noop:
    """Leave memory unchanged (Mem0's ``NONE`` event)."""

    kind: Literal["noop"] = field(default="noop", init=False)


@dataclass(frozen=True)
class Retrieve:
    """Ask for the ``k`` entries most relevant to ``query``."""

    query: str
    k: int = 5
    kind: Literal["retrieve"] = field(default="retrieve", init=False)


@dataclass(frozen=True)
class EditContext:
    """Remove context messages ``delete_ids`` and keep ``summary`` in their place (MemAct)."""

    delete_ids: tuple[str, ...]
    summary: str
    kind: Literal["edit_context"] = field(default="edit_context", init=False)


@dataclass(frozen=True)
class Answer:
    """Give the final answer of the episode."""

    text: str
    kind: Literal["answer"] = field(default="answer", init=False)


@dataclass(frozen=True)
class SetState:
    """Replace the agent's internal state with ``text`` (MEM1's ``<think>`` rewrite)."""

    text: str
    kind: Literal["set_state"] = field(default="set_state", init=False)


@dataclass(frozen=True)
class Overwrite:
    """Replace the whole memory with ``text`` (MemAgent's "Updated memory:")."""

    text: str
    kind: Literal["overwrite"] = field(default="overwrite", init=False)


@dataclass(frozen=True)
class Rank:
    """Order candidates by usefulness, most useful first (MemSifter's ``<ranking>``); ``order``
    holds candidate indices as written (the env drops duplicates and out-of-range ones)."""

    order: tuple[int, ...]
    kind: Literal["rank"] = field(default="rank", init=False)


@dataclass(frozen=True)
class Rate:
    """Rate the new stream item's importance, ``score`` from 0 (nothing worth keeping) up; a
    bounded bank keeps the highest-rated items (the importance score of Generative Agents, Park
    et al., 2023, as the only action: the env, not the policy, chooses what it evicts)."""

    score: int
    kind: Literal["rate"] = field(default="rate", init=False)


@dataclass(frozen=True)
class MemoryInsert:
    """Mem-α ``new_memory_insert``: add ``content`` to the memory of type ``memory_type``
    (``core`` / ``semantic`` / ``episodic``); the memory assigns the id."""

    memory_type: str
    content: str
    kind: Literal["memory_insert"] = field(default="memory_insert", init=False)


@dataclass(frozen=True)
class MemoryUpdate:
    """Mem-α ``memory_update``: replace entry ``memory_id`` of ``memory_type`` with
    ``new_content`` (no id: the whole core paragraph)."""

    memory_type: str
    new_content: str
    memory_id: str | None = None
    kind: Literal["memory_update"] = field(default="memory_update", init=False)


@dataclass(frozen=True)
class MemoryDelete:
    """Mem-α ``memory_delete``: remove entry ``memory_id`` of ``memory_type`` (no id: clear the
    core paragraph)."""

    memory_type: str
    memory_id: str | None = None
    kind: Literal["memory_delete"] = field(default="memory_delete", init=False)


@dataclass(frozen=True)
class MemorySearch:
    """Retrieve the ``k`` entries of the memory of type ``memory_type`` most relevant to
    ``query`` (Mem-α's ``search_memory``; ProactRL's retrieval from a typed repository, e.g.
    ``facts`` / ``episodes`` / ``skills``)."""

    memory_type: str
    query: str
    k: int = 5
    kind: Literal["memory_search"] = field(default="memory_search", init=False)


MemoryOp = (Add | Update | Delete | Noop | Retrieve | EditContext | Answer | SetState | Overwrite
            | Rank | Rate | MemoryInsert | MemoryUpdate | MemoryDelete | MemorySearch)

_OP_TYPES: dict[str, type] = {
    "add": Add,
    "update": Update,
    "delete": Delete,
    "noop": Noop,
    "retrieve": Retrieve,
    "edit_context": EditContext,
    "answer": Answer,
    "set_state": SetState,
    "overwrite": Overwrite,
    "rank": Rank,
    "rate": Rate,
    "memory_insert": MemoryInsert,
    "memory_update": MemoryUpdate,
    "memory_delete": MemoryDelete,
    "memory_search": MemorySearch,
}


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def op_to_dict(op: MemoryOp) -> dict:
    """Serialize an op to a JSON-ready dict with a ``kind`` key (fields in definition order;
    tuple fields become lists, so the dict equals its own JSON round trip).

    A shallow copy of the op's fields (what ``dataclasses.asdict`` gives for ops, whose fields
    are immutable, without its per-value deep copies: this runs for every op of every step).
    """
    return {name: list(v) if isinstance(v := getattr(op, name), tuple) else v
            for name in _field_names(type(op))}


def op_from_dict(data: dict) -> MemoryOp:
    """Rebuild an op from :func:`op_to_dict` output.

    Raises:
        SchemaError: ``data`` has no known ``kind`` or the wrong fields.
    """
    kind = data.get("kind")
    cls = _OP_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise SchemaError(f"expected an op kind in {sorted(_OP_TYPES)}, got {kind!r}")
    # JSON has no tuples: list fields (EditContext.delete_ids, Rank.order) become tuples again.
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "kind"}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise SchemaError(f"bad fields for op {kind!r}: {fields!r} ({exc})") from exc


@dataclass(frozen=True)
class OpResult:
    """What applying one op did.

    Attributes:
        op: The op that was applied.
        applied: True if the memory changed as the op asked (a Noop is always applied).
        id: The id of the entry the op created or touched, if any.
        reason: Why the op was rejected; empty when applied.
    """

    op: MemoryOp
    applied: bool
    id: str | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict: ``{"op": {...}, "applied", "id", "reason"}``."""
        return {"op": op_to_dict(self.op), "applied": self.applied, "id": self.id,
                "reason": self.reason}
