"""Scripted baselines for MemAct (Hermes tool calls and ``FINAL_ANSWER:``).

They read ``info["messages"]`` (the same context the observation renders) and ``info["question"]``;
the oracle also reads ``info["privileged"]``. Each decides its next message from the context
alone, so it needs no state of its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs.memact import MemActCodec
from memgym.engine import Completion
from memgym.ops import Answer, EditContext, Retrieve
from memgym.scoring import extract_answer, normalize_answer, surface_span

_CODEC = MemActCodec()
_TITLE = re.compile(r"^\[\d+\] (.*)$", re.MULTILINE)
_TOP = re.compile(r"^\[1\] (.*)\n(.*)$", re.MULTILINE)
_YES_NO = re.compile(r"^(is|are|was|were|do|does|did|can|could|has|have|had|will|would)\b",
                     re.IGNORECASE)
_CANDIDATE = "Candidate answer: "


def _tool_messages(info: dict) -> list[dict]:
    return [m for m in info["messages"] if m["role"] == "tool"]


def _guess(question: str, results: str) -> str:
    """A span answer from one search result: ``no`` for a yes/no question (the majority answer
    of HotpotQA's yes/no questions), else the title of the top result, else ``unknown``."""
    if _YES_NO.match(question.strip()):
        return "no"
    titles = _TITLE.findall(results)
    return titles[0] if titles else "unknown"


class NoopPolicy:
    """Answers at once without searching: ``FINAL_ANSWER: unknown`` (the reward's lower bound)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([Answer("unknown")])) for _ in observations]


class SearchAnswerPolicy:
    """Searches the question once (top 3), then answers with a span of the result (see
    :func:`_guess`): two steps, one segment."""

    name = "search-answer"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for info in infos:
            tools = _tool_messages(info)
            op = (Answer(_guess(info["question"], tools[0]["content"])) if tools
                  else Retrieve(info["question"], 3))
            out.append(Completion(_CODEC.encode([op])))
        return out


class SearchExtractPolicy:
    """Searches the question once (top 3), then answers ``no`` to a yes/no question and else a
    span of the top result picked by rules (:func:`memgym.scoring.extract_answer`: a date, a
    number or a name not in the question, by question word): two steps, one segment."""

    name = "search-extract"

    def _op(self, info: dict) -> Answer | Retrieve:
        tools = _tool_messages(info)
        if not tools:
            return Retrieve(info["question"], 3)
        top = _TOP.search(tools[0]["content"])
        if _YES_NO.match(info["question"].strip()) or top is None:
            return Answer(_guess(info["question"], tools[0]["content"]))
        return Answer(extract_answer(info["question"], top.group(1), top.group(2)))

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([self._op(info)])) for info in infos]


class SearchPruneAnswerPolicy:
    """Like ``search-answer``, but before answering prunes the search result, keeping only the
    candidate answer in ``memory``: three steps, two segments (an ``edit`` then the end)."""

    name = "search-prune-answer"

    def _op(self, info: dict) -> Answer | EditContext | Retrieve:
        if info["num_prunes"]:
            memory = next(op.summary for m in info["messages"] if m["role"] == "assistant"
                          for op in _CODEC.decode(m["content"]).ops
                          if isinstance(op, EditContext))
            return Answer(memory.removeprefix(_CANDIDATE))
        tools = _tool_messages(info)
        if not tools:
            return Retrieve(info["question"], 3)
        guess = _guess(info["question"], tools[0]["content"])
        return EditContext((tools[0]["id"],), f"{_CANDIDATE}{guess}")

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([self._op(info)])) for info in infos]


class OraclePolicy:
    """Upper bound from gold data: searches each supporting paragraph's title (top 2), prunes
    all results into a memory naming the supporting titles and the gold answer, then answers
    the gold answer: ``2 + 2`` steps, two segments."""

    name = "oracle"

    def _op(self, info: dict) -> Answer | EditContext | Retrieve:
        gold = info["privileged"]
        if info["num_prunes"]:
            return Answer(gold["answers"][0])
        tools, titles = _tool_messages(info), gold["supporting_titles"]
        if len(tools) < len(titles):
            return Retrieve(titles[len(tools)], 2)
        memory = f"Supporting: {'; '.join(titles)}. Answer: {gold['answers'][0]}"
        return EditContext(tuple(m["id"] for m in tools), memory)

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([self._op(info)])) for info in infos]


class ExtractOraclePolicy:
    """A teacher an imitator can follow (privileged): searches the question once (top 3, as
    ``search-answer`` does), then answers a gold alias as the results write it
    (:func:`memgym.scoring.surface_span`), the gold ``yes`` / ``no`` of a yes/no question, and
    where the results hold no gold alias, ``search-answer``'s guess: two steps, one segment.
    Unlike ``oracle`` it never searches a title it could not know nor answers what it did not
    read, so SFT on it teaches reading the answer off the results."""

    name = "extract-oracle"
    privileged = True

    def _op(self, info: dict) -> Answer | Retrieve:
        tools = _tool_messages(info)
        if not tools:
            return Retrieve(info["question"], 3)
        answers, results = info["privileged"]["answers"], tools[0]["content"]
        if normalize_answer(answers[0]) in ("yes", "no"):
            return Answer(normalize_answer(answers[0]))
        return Answer(surface_span(answers, results) or _guess(info["question"], results))

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([self._op(info)])) for info in infos]


BASELINES = {p.name: p for p in (OraclePolicy, ExtractOraclePolicy, SearchAnswerPolicy,
                                 SearchExtractPolicy, SearchPruneAnswerPolicy, NoopPolicy)}
