"""Scripted baselines for MemSifter's ranking env (``<ranking>i,j,…</ranking>`` actions).

They read the reset ``info``: the question and the candidates' full text (what MemSifter's proxy
reads; the observation shows previews only), and the oracle also ``info["privileged"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from memgym.codecs import RankingCodec
from memgym.engine import Completion
from memgym.ops import Rank
from memgym.retrieval import BM25Index

_CODEC = RankingCodec()


def _rank(order: Sequence[int]) -> Completion:
    return Completion(_CODEC.encode([Rank(tuple(order))]))


class OraclePolicy:
    """Upper bound from gold data: ranks exactly the sessions that hold the question's evidence
    (chronologically) and nothing else, so every tier sees the evidence and no distractor."""

    name = "oracle"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rank(info["privileged"]["evidence_sessions"]) for info in infos]


class BM25Policy:
    """Ranks the candidates by BM25 of the question over their full text; candidates sharing
    no term with the question are left out."""

    name = "bm25"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        out = []
        for info in infos:
            texts = [c["text"] for c in info["candidates"]]
            out.append(_rank([i for i, _ in BM25Index(texts).search(info["question"],
                                                                     len(texts))]))
        return out


class RecencyPolicy:
    """Ranks every candidate, most recent session first (candidates are chronological)."""

    name = "recency"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rank(range(len(info["candidates"]) - 1, -1, -1)) for info in infos]


class NoopPolicy:
    """Ranks nothing (``<ranking></ranking>``): the answerer gets no memory, so the gain is 0,
    the reward's lower bound for a well-formed action (the identity order 0, 1, 2, … is not a
    lower bound: it is a chronological ranking that gains like ``recency``)."""

    name = "noop"

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`memgym.rollouts.Policy`."""
        return [_rank(()) for _ in observations]


BASELINES = {p.name: p for p in (OraclePolicy, BM25Policy, RecencyPolicy, NoopPolicy)}
