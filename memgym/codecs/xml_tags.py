"""MEM1's XML-tag action format (also Search-R1's).

Canonical form::

    <think>internal state</think>
    <search>query</search>          or          <answer>answer 1; answer 2</answer>

Decoding is lenient where small policies drift and strict where the meaning would be ambiguous:

* tag names are case-insensitive; text outside the tags is ignored (so is a hallucinated
  ``<information>`` block);
* the final action tag may be left unclosed (generation often stops at the ``</search>`` stop
  string, which is then cut off): its content runs to the end of the text;
* ``<think>`` is optional unless ``require_think``: without it no :class:`SetState` op is
  produced (MEM1's env then keeps an empty internal state, which is its own cost);
* errors: no ``<search>``/``<answer>``, both of them, either one twice, more than one
  ``<think>``, an unclosed ``<think>``, an empty query.

Ops: ``(SetState(think)?, Retrieve(query, top_k))`` or ``(SetState(think)?, Answer(text))``, with
surrounding whitespace stripped from every field.

Typed repositories (ProactRL's facts / episodes / skills): a codec built with
``repositories`` reads ``<search repo="episodes">query</search>`` (attribute name and value
case-insensitive, quotes ``"``, ``'`` or none) as ``MemorySearch("episodes", query, top_k)``;
there a ``<search>`` that names no repository, or one not in ``repositories``, is an error.
Without ``repositories`` only a bare ``<search>`` is an action tag, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.base import ParseError, ParseResult, checks_unicode
from memgym.ops import Answer, MemoryOp, MemorySearch, Retrieve, SetState

_OPEN = {name: re.compile(rf"<{name}>", re.IGNORECASE) for name in ("think", "search", "answer")}
_CLOSE = {name: re.compile(rf"</{name}>", re.IGNORECASE) for name in ("think", "search", "answer")}
_OPEN_TYPED_SEARCH = re.compile(r"<search(\s[^<>]*)?>", re.IGNORECASE)
_REPO = re.compile(r"""\s*repo\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"']+))\s*""", re.IGNORECASE)


def _blocks(text: str, name: str, opener: re.Pattern | None = None
            ) -> list[tuple[int, str, bool, int, re.Match]]:
    """Every ``<name>…</name>`` block as (start offset, content, closed, end offset, the
    opening tag's match); ``opener`` replaces the ``<name>`` pattern."""
    out, pos = [], 0
    while (m := (opener or _OPEN[name]).search(text, pos)) is not None:
        end = _CLOSE[name].search(text, m.end())
        if end is None:
            out.append((m.start(), text[m.end():], False, len(text), m))
            break
        out.append((m.start(), text[m.end():end.start()], True, end.end(), m))
        pos = end.end()
    return out


class XmlTagsCodec:
    """``<think>``/``<search>``/``<answer>`` text ⇄ ``SetState``/``Retrieve``/``Answer`` ops.

    Args:
        top_k: The ``k`` of the ``Retrieve`` op a ``<search>`` decodes to (passages returned).
        require_think: Make a missing ``<think>`` block a parse error.
        repositories: Names (lower case) of the typed repositories a ``<search repo="...">``
            may name; empty: plain ``<search>`` (see the module docs).
    """

    name = "xml_tags"

    def __init__(self, top_k: int = 3, require_think: bool = False,
                 repositories: tuple[str, ...] = ()) -> None:
        self.top_k, self.require_think = top_k, require_think
        self.repositories = tuple(repositories)

    @checks_unicode
    def decode(self, text: str) -> ParseResult:
        """Parse ``text`` (see the module docs); returns a :class:`ParseResult`, never raises."""
        thinks = _blocks(text, "think")
        if len(thinks) > 1:
            return ParseResult((), ParseError(thinks[1][0], "expected one <think> block, got "
                                                             f"{len(thinks)}"))
        if thinks and not thinks[0][2]:
            return ParseResult((), ParseError(thinks[0][0], "unclosed <think>"))
        if not thinks and self.require_think:
            return ParseResult((), ParseError(0, "expected a <think> block, found none"))
        rest = text
        if thinks:  # an action tag inside <think> is part of the state, not an action
            start = thinks[0][0]
            end = _CLOSE["think"].search(text, start).end()  # type: ignore[union-attr]
            rest = text[:start] + " " * (end - start) + text[end:]
        opener = _OPEN_TYPED_SEARCH if self.repositories else None
        searches, answers = _blocks(rest, "search", opener), _blocks(rest, "answer")
        if searches and answers:
            position = max(searches[0][0], answers[0][0])
            return ParseResult((), ParseError(position, "expected one of <search> or <answer>, "
                                                        "got both"))
        actions = searches or answers
        if not actions:
            return ParseResult((), ParseError(len(text), "expected <search> or <answer>, "
                                                         "found neither"))
        kind = "search" if searches else "answer"
        if len(actions) > 1:
            return ParseResult((), ParseError(actions[1][0], f"expected one <{kind}> block, "
                                                             f"got {len(actions)}"))
        position, content, _, end, opening = actions[0]
        content = content.strip()
        ops: list[MemoryOp] = [SetState(thinks[0][1].strip())] if thinks else []
        if kind == "search":
            if not content:
                return ParseResult((), ParseError(position, "empty <search> query"))
            if not self.repositories:
                ops.append(Retrieve(content, self.top_k))
                return ParseResult(tuple(ops), end=end)
            repo = _REPO.fullmatch(opening[1] or "")
            name = next((g for g in repo.groups() if g is not None), "").lower() if repo else ""
            if name not in self.repositories:
                names = ", ".join(self.repositories)
                return ParseResult((), ParseError(position, (
                    f'expected <search repo="..."> with repo one of {names}, got '
                    f"{opening[0]!r}")))
            ops.append(MemorySearch(name, content, self.top_k))
        else:
            ops.append(Answer(content))
        return ParseResult(tuple(ops), end=end)

    def encode(self, ops: Sequence[MemoryOp]) -> str:
        """Render ops in the canonical form (texts are not escaped: they must not contain the
        closing tags).

        Raises:
            TypeError: An op other than ``SetState``/``Retrieve``/``MemorySearch``/``Answer``
                (a programming error).
        """
        parts = []
        for op in ops:
            if isinstance(op, SetState):
                parts.append(f"<think>{op.text}</think>")
            elif isinstance(op, Retrieve):
                parts.append(f"<search>{op.query}</search>")
            elif isinstance(op, MemorySearch):
                parts.append(f'<search repo="{op.memory_type}">{op.query}</search>')
            elif isinstance(op, Answer):
                parts.append(f"<answer>{op.text}</answer>")
            else:
                raise TypeError(f"the XML-tag format has no tag for {type(op).__name__}")
        return "\n".join(parts)
