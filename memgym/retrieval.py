"""BM25 retrieval over short texts (memory entries, sessions, passages), scored as bm25s scores.

Why this is not a thin wrapper over ``bm25s.BM25``: bm25s has no incremental add, so an env
rebuilds the index over its memory bank for every observation. For a bank of tens of entries
bm25s's build (vocabulary, CSC matrix, tokenizer and progress machinery) costs ~0.3 ms, which
dominated stepping and replay (~1.3k env steps/s). :class:`BM25Index` reproduces bm25s's
default model exactly -- its tokenizer (scikit-learn's token pattern, lowercase, bm25s's English
stopwords), the Lucene BM25 variant with ``k1=1.5, b=0.75``, float32 per-(term, document)
scores and their float32 accumulation in query-term order -- caches tokenization per text (a
pure function, so the cache never changes results) and scores only the terms a query uses.
``tests/test_retrieval.py`` checks that rankings and scores equal bm25s's bit for bit on random
corpora and queries.

Exactness notes: Python floats are IEEE doubles, so the double-precision steps match numpy's;
rounding to float32 goes through ``array("f")``; accumulating float32 values in double and
rounding after each addition equals float32 addition (double has >= 2*24+2 bits).
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

K1 = 1.5  # bm25s.BM25 defaults (method="lucene")
B = 0.75
_SPLIT = re.compile(r"(?u)\b\w\w+\b").findall  # bm25s.tokenize's default token_pattern
_STOPWORDS = frozenset(STOPWORDS_EN)
_NUMPY_FROM = 256  # corpora at least this large accumulate scores with numpy


@lru_cache(maxsize=1 << 16)
def tokenize(text: str) -> tuple[str, ...]:
    """Tokens of ``text`` as ``bm25s.tokenize(text, stopwords="en")`` gives them (cached).

    Args:
        text: Any text.

    Returns:
        Lowercased word tokens of >= 2 characters, English stopwords removed, in text order.
    """
    return tuple(tok for tok in _SPLIT(text.lower()) if tok not in _STOPWORDS)


@lru_cache(maxsize=1 << 16)
def _terms(text: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(token count, (term, frequency) pairs) of a document."""
    tokens = tokenize(text)
    return len(tokens), tuple(Counter(tokens).items())


@lru_cache(maxsize=1 << 16)
def _idf32(size: int, df: int) -> float:
    """bm25s's Lucene idf of a term in ``df`` of ``size`` documents, rounded to float32."""
    return array("f", [math.log(1 + (size - df + 0.5) / (df + 0.5))])[0]


class BM25Index:
    """A static BM25 index (build a new one when the corpus changes; building is cheap).

    Args:
        texts: The documents, in the order their indices refer to.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self._postings: dict[str, list[tuple[int, int]]] = {}
        self._lengths: list[int] = []
        postings = self._postings
        for d, text in enumerate(texts):
            length, counts = _terms(text)
            self._lengths.append(length)
            for term, tf in counts:
                if (docs := postings.get(term)) is None:
                    postings[term] = [(d, tf)]
                else:
                    docs.append((d, tf))
        self._norms: list[float] | None = None
        self._scored: dict[str, tuple[list[int], array]] = {}

    def _term_scores(self, term: str) -> tuple[list[int], array]:
        """Documents holding ``term`` and their float32 BM25 term scores (memoized)."""
        scored = self._scored.get(term)
        if scored is None:
            if self._norms is None:  # bm25s's per-document k1 * (1 - b + b * len / avg len)
                avg = sum(self._lengths) / self.size
                self._norms = [K1 * ((1 - B) + B * length / avg) for length in self._lengths]
            postings, norms = self._postings[term], self._norms
            idf = _idf32(self.size, len(postings))
            scored = ([d for d, _ in postings],
                      array("f", [idf * (tf / (norms[d] + tf)) for d, tf in postings]))
            self._scored[term] = scored
        return scored

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` documents for ``query`` with a positive BM25 score.

        Args:
            query: Free text.
            k: Most results to return (>= 0).

        Returns:
            ``(document index, score)`` pairs, best first; ties keep index order. Documents that
            share no term with the query are left out, so fewer than ``k`` may come back. A
            corpus without any token matches nothing (bm25s refuses to index it).
        """
        terms = [t for t in tokenize(query) if t in self._postings] if k > 0 else []
        if not terms:
            return []
        if self.size >= _NUMPY_FROM:
            return self._search_numpy(terms, k)
        scores = array("f", bytes(4 * self.size))
        for term in terms:  # in query order, repeated terms counted again (as bm25s)
            docs, values = self._term_scores(term)
            for d, value in zip(docs, values, strict=True):
                scores[d] += value
        hits = [(i, s) for i, s in enumerate(scores) if s > 0]
        hits.sort(key=lambda hit: -hit[1])  # stable: ties keep index order
        return hits[:k]

    def _search_numpy(self, terms: list[str], k: int) -> list[tuple[int, float]]:
        scores = np.zeros(self.size, dtype=np.float32)
        for term in terms:
            docs, values = self._term_scores(term)
            scores[docs] += np.frombuffer(values, dtype=np.float32)
        order = np.lexsort((np.arange(self.size), -scores))[:k]
        return [(int(i), float(scores[i])) for i in order if scores[i] > 0]
