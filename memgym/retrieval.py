"""BM25 retrieval over short texts (memory entries, sessions, passages), backed by bm25s."""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


class BM25Index:
    """A static BM25 index (bm25s has no incremental add: rebuild it when the corpus changes).

    Args:
        texts: The documents, in the order their indices refer to.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self._retriever: bm25s.BM25 | None = None
        tokens = _tokens(texts) if self.size else []
        if any(tokens):  # bm25s cannot index a corpus without a single token (e.g. ["a"])
            self._retriever = bm25s.BM25()
            self._retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` documents for ``query`` with a positive BM25 score.

        Args:
            query: Free text.
            k: Most results to return (>= 0).

        Returns:
            ``(document index, score)`` pairs, best first; ties keep index order. Documents that
            share no term with the query are left out, so fewer than ``k`` may come back.
        """
        if self._retriever is None or k <= 0:
            return []
        query_tokens = _tokens([query])[0]
        if not query_tokens:
            return []
        scores = self._retriever.get_scores(query_tokens)
        order = np.lexsort((np.arange(self.size), -scores))[:k]
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]
