"""Scripted baselines for MEM1 (XML-tag actions).

The heuristic reads only the observation (the composed question, its own last ``<think>`` and
the last ``<information>``) and ``info["turn"]`` / ``info["max_turns"]``; the oracle also reads
``info["privileged"]``. They are baselines to compare learned policies against.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memgym.codecs import XmlTagsCodec
from memgym.engine import Completion
from memgym.envs.mem1.compose import split_question
from memgym.ops import Answer, Retrieve, SetState
from memgym.scoring import normalize_answer, surface_span

_CODEC = XmlTagsCodec()
_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)
_THINK = re.compile(r"^<think>(.*?)</think>$", re.DOTALL | re.MULTILINE)
_TOP_DOC = re.compile(r"<information>\nDoc 1 \(Title: (.*)\)\n(.*)$", re.MULTILINE)
_MONTH = ("January|February|March|April|May|June|July|August|September|October|November|"
          "December")
_DATE = re.compile(rf"\b(?:(?:{_MONTH}) \d{{1,2}}, )?(?:1\d{{3}}|20\d{{2}})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"(?:[A-Z][\w'.-]*|\d[\d,.]*)"
                   r"(?:\s+(?:of|the|de|and|von|van)?\s*(?:[A-Z][\w'.-]*|\d[\d,.]*))*")
_FILLER = {"the", "a", "an", "in", "on", "it", "he", "she", "this", "they", "his", "her"}
_FOUND = "candidates:"


def _words(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def extract_answer(question: str, title: str, passage: str) -> str:
    """A short answer span for ``question`` from its top passage (rule-based, no model).

    ``when`` / ``what year`` / ``which year``: the first date or year; ``how many`` / ``how
    much``: the first number; otherwise the first capitalized (or numeric) phrase whose words
    are not all in the question. Falls back to the passage title. Never contains ``;`` or ``|``.
    """
    lowered, asked = question.lower(), _words(question)
    if lowered.startswith("when") or "what year" in lowered or "which year" in lowered:
        pattern = _DATE
    elif "how many" in lowered or "how much" in lowered:
        pattern = _NUMBER
    else:
        pattern = _NAME
    for match in pattern.finditer(passage):
        span = match.group(0).strip(" .,")
        if span and span.lower() not in _FILLER and not _words(span) <= asked:
            return span
    return title.replace(";", ",").replace("|", "/")


class NoopPolicy:
    """Answers nothing at once: ``<think></think><answer></answer>`` (return 0)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([SetState(""), Answer("")])) for _ in observations]


class SearchThenAnswerPolicy:
    """Searches each sub-question in turn with its own text, extracts a candidate answer from the
    top passage (:func:`extract_answer`), carries the candidates in ``<think>candidates: a | b``
    and answers them all when every sub-question was searched or one turn is left."""

    name = "search-then-answer"

    def _act(self, observation: str, info: dict) -> str:
        question = _QUESTION.search(observation)
        questions = split_question(question.group(1)) if question else []
        think = _THINK.search(observation)
        state = think.group(1) if think else ""
        found = [c.strip() for c in state.removeprefix(_FOUND).split("|") if c.strip()]
        top = _TOP_DOC.search(observation)
        if top and len(found) < len(questions):
            found.append(extract_answer(questions[len(found)], top.group(1), top.group(2)))
        memo = SetState(f"{_FOUND} {' | '.join(found)}")
        if len(found) >= len(questions) or info["turn"] + 1 >= info["max_turns"]:
            return _CODEC.encode([memo, Answer("; ".join(found))])
        return _CODEC.encode([memo, Retrieve(questions[len(found)])])

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(self._act(o, i)) for o, i in zip(observations, infos, strict=True)]


class OraclePolicy:
    """Upper bound from gold data: searches each sub-question (while more than one turn is left),
    keeping the gold answers of those searched so far in ``<think>``, then answers every
    sub-question with a gold alias (return k): the one its observation shows, as written there
    (:func:`memgym.scoring.surface_span`; the last search's passage holds the last
    sub-question's answer), else the first."""

    name = "oracle"

    def _act(self, observation: str, info: dict) -> str:
        questions, answers = info["privileged"]["questions"], info["privileged"]["answers"]
        turn = info["turn"]
        read = observation[observation.find("\nQuestion: "):]  # not the instructions
        spans = [surface_span(a, read) or a[0] for a in answers]
        if turn < len(questions) and turn + 1 < info["max_turns"]:
            memo = "; ".join(f"({i + 1}) {a}" for i, a in enumerate(spans[:turn]))
            return _CODEC.encode([SetState(memo), Retrieve(questions[turn])])
        return _CODEC.encode([SetState(""), Answer("; ".join(spans))])

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(self._act(o, i)) for o, i in zip(observations, infos, strict=True)]


BASELINES = {p.name: p for p in (OraclePolicy, SearchThenAnswerPolicy, NoopPolicy)}
