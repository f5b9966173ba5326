"""Scripted baselines for ``memgym/ProactiveRetrieval-v0`` (``<search>`` / ``<answer>`` actions).

Every baseline but the oracle answers with the context reader
(:func:`~memgym.envs.proactive.reader.answer_from_context`) and searches with the question's
own text; they differ in *when* they retrieve. The oracle reads ``info["privileged"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from memgym.codecs import XmlTagsCodec
from memgym.engine import Completion
from memgym.envs.proactive.reader import answer_from_context, asked_key, known_values
from memgym.ops import Answer, Retrieve

_CODEC = XmlTagsCodec()


def _answer(observation: str) -> str:
    return _CODEC.encode([Answer(answer_from_context(observation))])


def _search(info: dict) -> str:
    return _CODEC.encode([Retrieve(info["question"])])


class OraclePolicy:
    """Upper bound from gold data: retrieves exactly when the evidence (the key's latest fact)
    is not in its context and a retrieval is left, then answers the gold value."""

    name = "oracle"

    def _act(self, info: dict) -> str:
        gold = info["privileged"]
        if not gold["in_context"] and info["retrievals_left"] > 0:
            return _search(info)
        return _CODEC.encode([Answer(gold["answer"])])

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(self._act(info)) for info in infos]


class AlwaysRetrievePolicy:
    """Retrieves once per task, then answers from context and what came back."""

    name = "always-retrieve"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_search(i) if i["retrievals"] == 0 and i["retrievals_left"] > 0
                           else _answer(o)) for o, i in zip(observations, infos, strict=True)]


class RetrieveIfAbsentPolicy:
    """Retrieves only when its context states nothing about the asked key; a stale fact in
    context (the key changed since) fools it."""

    name = "retrieve-if-absent"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_search(i) if not known_values(o, asked_key(o))
                           and i["retrievals_left"] > 0 else _answer(o))
                for o, i in zip(observations, infos, strict=True)]


class NoopPolicy:
    """Never retrieves: answers every task from its context (the reader; ``never-retrieve``)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_answer(o)) for o in observations]


BASELINES = {p.name: p for p in (OraclePolicy, AlwaysRetrievePolicy, RetrieveIfAbsentPolicy,
                                 NoopPolicy)}
