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
from memgym.scoring import extract_answer, surface_span

_CODEC = XmlTagsCodec()
_QUESTION = re.compile(r"^Question: (.*)$", re.MULTILINE)
_THINK = re.compile(r"^<think>(.*?)</think>$", re.DOTALL | re.MULTILINE)
_TOP_DOC = re.compile(r"<information>\nDoc 1 \(Title: (.*)\)\n(.*)$", re.MULTILINE)
_FOUND = "candidates:"


class NoopPolicy:
    """Answers nothing at once: ``<think></think><answer></answer>`` (return 0)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_CODEC.encode([SetState(""), Answer("")])) for _ in observations]


class SearchThenAnswerPolicy:
    """Searches each sub-question in turn with its own text, extracts a candidate answer from the
    top passage (:func:`memgym.scoring.extract_answer`), carries the candidates in
    ``<think>candidates: a | b`` and answers them all when every sub-question was searched or
    one turn is left."""

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
