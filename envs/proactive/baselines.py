"""Scripted baselines for ``memgym/ProactiveRetrieval`` (``<search>`` / ``<answer>`` actions).

Every baseline but the oracle answers with the context reader
(:func:`~memgym.envs.proactive.reader.answer_from_context`); they differ in *when* they
retrieve and, with the typed store (``-v2``, :data:`TYPED_BASELINES`), *where*. The oracle
reads ``info["privileged"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from memgym.codecs import XmlTagsCodec
from memgym.engine import Completion
from memgym.envs.proactive.reader import (
    RECALL,
    SKILL_LINE,
    answer_from_context,
    asked_key,
    known_values,
)
from memgym.envs.proactive.store import EPISODE_LINE, SKILLS
from memgym.ops import Answer, MemorySearch, Retrieve

_CODEC = XmlTagsCodec()


def _answer(observation: str) -> str:
    return _CODEC.encode([Answer(answer_from_context(observation))])


def _search(query: str, repository: str | None = None) -> str:
    """A ``<search>`` for ``query``; in ``repository`` when given (the typed store)."""
    return _CODEC.encode([Retrieve(query) if repository is None
                          else MemorySearch(repository, query)])


class OraclePolicy:
    """Upper bound from gold data: retrieves exactly when an item the answer needs (the key's
    latest fact; with the typed store also the skill or the episode record) is not in its
    context and a retrieval is left, from the right repository, then answers the gold value."""

    name = "oracle"

    def _act(self, info: dict) -> str:
        gold = info["privileged"]
        if not gold["in_context"] and info["retrievals_left"] > 0:
            if "search" in gold:  # the typed store: the first missing item's repository
                return _search(gold["search"][0][1], gold["search"][0][0])
            return _search(info["question"])
        return _CODEC.encode([Answer(gold["answer"])])

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(self._act(info)) for info in infos]


class AlwaysRetrievePolicy:
    """Retrieves once per task (the question, from ``repository``), then answers from context
    and what came back."""

    name = "always-retrieve"
    repository: str | None = None

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_search(i["question"], self.repository)
                           if i["retrievals"] == 0 and i["retrievals_left"] > 0 else _answer(o))
                for o, i in zip(observations, infos, strict=True)]


class RetrieveIfAbsentPolicy:
    """Retrieves (the question, from ``repository``) only when its context states nothing
    about the asked key; a stale fact in context (the key changed since) fools it."""

    name = "retrieve-if-absent"
    repository: str | None = None

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_search(i["question"], self.repository)
                           if not known_values(o, asked_key(o))
                           and i["retrievals_left"] > 0 else _answer(o))
                for o, i in zip(observations, infos, strict=True)]


class NoopPolicy:
    """Never retrieves: answers every task from its context (the reader; ``never-retrieve``)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(_answer(o)) for o in observations]


class TypedAlwaysRetrievePolicy(AlwaysRetrievePolicy):
    """:class:`AlwaysRetrievePolicy` on the typed store: searches the ``facts``."""

    repository = "facts"


class RouteByQuestionPolicy:
    """Routes by the question's form (typed store): a recall question searches the
    ``episodes`` for the question it quotes (unless the record is shown); a question about a
    derived quantity searches the ``skills`` for it (unless shown), then, like a fact question,
    the ``facts`` for the key when its context states nothing about it. A stale fact in context
    fools it."""

    name = "route-by-question"

    @staticmethod
    def _act(observation: str, info: dict) -> str:
        if info["retrievals_left"] == 0:
            return _answer(observation)
        recall = RECALL.search(observation)
        if recall is not None:
            shown = recall.group(1) in dict(EPISODE_LINE.findall(observation))
            return _answer(observation) if shown else _search(recall.group(2), "episodes")
        owner, _, quantity = asked_key(observation).partition("'s ")
        key = f"{owner}'s {quantity}"
        if quantity in SKILLS:
            if quantity not in SKILL_LINE.findall(observation):
                return _search(quantity, "skills")
            key = f"{owner}'s {SKILLS[quantity].attribute}"
        return _search(key, "facts") if not known_values(observation, key) else _answer(
            observation)

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [Completion(self._act(o, i)) for o, i in zip(observations, infos, strict=True)]


BASELINES = {p.name: p for p in (OraclePolicy, AlwaysRetrievePolicy, RetrieveIfAbsentPolicy,
                                 NoopPolicy)}
TYPED_BASELINES = {p.name: p for p in (OraclePolicy, TypedAlwaysRetrievePolicy,
                                       RouteByQuestionPolicy, NoopPolicy)}
"""The ``-v2`` (typed store) baselines: searches name a repository."""
