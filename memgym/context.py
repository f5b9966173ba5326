"""The working context: the message list an agent acts on, editable by tool-call id (MemAct).

A :class:`WorkingContext` is the state a context-editing policy changes (DESIGN §1): system and
user messages, the assistant's messages with the ids of the tool calls they made, and one tool
message per call, identified by that call's id. :meth:`WorkingContext.apply` runs MemAct's
``prune_context`` (an :class:`memgym.ops.EditContext`): the tool messages with the listed ids
are removed, and so is every assistant message all of whose calls were removed.

Rendering is append-only: the text of a context with one more message is the old text followed
by the new message's text, so between two edits each prompt extends the previous one (one DCPO
segment). :meth:`WorkingContext.chat` gives the same context as chat-template messages, which a
policy renders with its model's own template (:class:`memgym.rollouts.chat.ChatRenderer`).
Tokens are counted as ``ceil(characters / 4)`` of the rendered text, a tokenizer-free estimate
close to BPE counts on English prose; it is deterministic and cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from memgym.ops import EditContext, OpResult


@dataclass(frozen=True)
class Message:
    """One message of a working context.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: The text.
        id: For a tool message, the id of the call it answers; empty otherwise.
        tool_call_ids: For an assistant message, the ids of the calls it made (may be empty).
    """

    role: str
    content: str
    id: str = ""
    tool_call_ids: tuple[str, ...] = ()

    def render(self) -> str:
        """The message as prompt text: a ``<|role|>`` (tool: ``<|tool id=ID|>``) header line,
        the content and a newline."""
        header = f"<|tool id={self.id}|>" if self.role == "tool" else f"<|{self.role}|>"
        return f"{header}\n{self.content}\n"

    def chat(self) -> dict[str, str]:
        """The message as a chat-template message: ``{"role", "content"}``. A tool message's
        content starts with its ``<|tool id=ID|>`` line, so the model sees the id to prune by
        whatever the template does with the tool role."""
        if self.role == "tool":
            return {"role": "tool", "content": self.render().removesuffix("\n")}
        return {"role": self.role, "content": self.content}

    def to_dict(self) -> dict:
        """JSON-ready dict with ``role``, ``content``, ``id``, ``tool_call_ids`` (a list)."""
        data = asdict(self)
        data["tool_call_ids"] = list(self.tool_call_ids)
        return data


def count_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``ceil(len(text) / 4)`` (see the module docstring)."""
    return (len(text) + 3) // 4


class WorkingContext:
    """An ordered list of :class:`Message` with MemAct's prune-by-call-id edit.

    Args:
        messages: Initial messages, in order.
    """

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._messages: list[Message] = list(messages)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def messages(self) -> tuple[Message, ...]:
        """The messages, in order."""
        return tuple(self._messages)

    def append(self, message: Message) -> None:
        """Add ``message`` at the end."""
        self._messages.append(message)

    def tool_ids(self) -> list[str]:
        """Ids of the tool messages in the context, in order."""
        return [m.id for m in self._messages if m.role == "tool"]

    def delete(self, ids: Iterable[str]) -> list[Message]:
        """Remove the tool messages whose id is in ``ids`` and every assistant message that made
        calls, all of which are now removed. Unknown ids are ignored.

        Returns:
            The removed messages, in context order.
        """
        gone = set(ids) & set(self.tool_ids())
        removed, kept = [], []
        for m in self._messages:
            if (m.role == "tool" and m.id in gone) or (
                    m.role == "assistant" and m.tool_call_ids and set(m.tool_call_ids) <= gone):
                removed.append(m)
            else:
                kept.append(m)
        self._messages = kept
        return removed

    def apply(self, op: EditContext) -> OpResult:
        """Apply ``prune_context``: delete ``op.delete_ids`` (see :meth:`delete`).

        All-or-nothing: if any id is not a tool message of the context, nothing is removed and
        the op is rejected. The summary is not stored here: it stays in the context as part of
        the assistant message that made the call (MemAct).

        Returns:
            The :class:`OpResult`; ``id`` is None, ``reason`` lists unknown ids when rejected.
        """
        present = set(self.tool_ids())
        unknown = [i for i in dict.fromkeys(op.delete_ids) if i not in present]
        if unknown:
            return OpResult(op, False, None, f"unknown tool-call ids {unknown}")
        self.delete(op.delete_ids)
        return OpResult(op, True)

    def render(self) -> str:
        """All messages rendered and concatenated (see :meth:`Message.render`)."""
        return "".join(m.render() for m in self._messages)

    def chat(self) -> list[dict[str, str]]:
        """The messages as chat-template messages (:meth:`Message.chat`), in order."""
        return [m.chat() for m in self._messages]

    def count_tokens(self) -> int:
        """Estimated tokens of :meth:`render` (see :func:`count_tokens`)."""
        return count_tokens(self.render())

    def snapshot(self) -> tuple[Message, ...]:
        """Immutable copy of the state (messages are frozen and shared)."""
        return tuple(self._messages)

    def restore(self, snap: tuple[Message, ...]) -> None:
        """Make the context equal to ``snap``."""
        self._messages = list(snap)
