"""BM25 retrieval over short texts (memory entries, sessions, passages), scored as bm25s scores.

Why this is not a thin wrapper over ``bm25s.BM25``: bm25s has no incremental add, so an env
would rebuild the index over its memory bank for every observation (~0.3 ms for tens of entries,
and a step's cost growing with the bank). :class:`BM25Index` reproduces bm25s's default model
exactly -- its tokenizer (scikit-learn's token pattern, lowercase, bm25s's English stopwords),
the Lucene BM25 variant with ``k1=1.5, b=0.75``, float32 per-(term, document) scores and their
float32 accumulation in query-term order -- and is edited per document (:meth:`BM25Index.add`,
``replace``, ``remove``): a :class:`~memgym.memory.MemoryBank` keeps one index for a whole
episode, and a step pays for its op's terms and for ranking the query's postings, not for
re-indexing the bank. ``tests/test_retrieval.py`` checks that rankings and scores equal bm25s's
bit for bit on random corpora, queries and edit sequences.

SQLite FTS5 (stdlib ``sqlite3``), which also indexes per row, was measured beside it
(``experiments/bench/bank_scale.py``): 5-10x slower per memory-manager step at 10 and 1,000
entries, and its ``bm25()`` (k1 = 1.2, its own idf and tokenizer) would rank differently, which
would change every saved trajectory's observations.

Exactness notes: Python floats are IEEE doubles, so the double-precision steps match numpy's;
rounding to float32 goes through ``array("f")`` or ``astype(float32)``; accumulating float32
values in double and rounding after each addition equals float32 addition (double has >= 2*24+2
bits), and ``np.add.at`` adds in index order, so a document's terms add in query order.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Hashable, Sequence
from functools import lru_cache

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from memgym.errors import ConfigError

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


class _Postings:
    """One term's postings, ``tf``: slot -> term frequency. A query on a large corpus reads
    them as numpy arrays, made on first use and then edited in place with every put / drop
    (``at``: slot -> row; a drop moves the last row into the gap), so a term that changes at
    every step (a speaker's name) is never converted again."""

    __slots__ = ("at", "slots", "tf", "tfs")

    def __init__(self, tf: dict[int, int]) -> None:
        self.tf = tf
        self.slots: np.ndarray | None = None  # int64 slots, float64 tfs: None until arrays()
        self.tfs: np.ndarray | None = None
        self.at: dict[int, int] = {}

    def put(self, slot: int, tf: int) -> None:
        self.tf[slot] = tf
        if self.slots is not None:
            row = len(self.at)
            if row == len(self.slots):
                self._grow(2 * row)
            self.slots[row], self.tfs[row], self.at[slot] = slot, tf, row

    def drop(self, slot: int) -> None:
        del self.tf[slot]
        if self.slots is not None:
            row, last = self.at.pop(slot), len(self.at)
            if row != last:
                moved = int(self.slots[last])
                self.slots[row], self.tfs[row], self.at[moved] = moved, self.tfs[last], row

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(slots as int64, term frequencies as float64), views of the live rows."""
        n = len(self.tf)
        if self.slots is None:
            self.slots = np.fromiter(self.tf, np.int64, n)
            self.tfs = np.fromiter(self.tf.values(), np.float64, n)
            self.at = {slot: row for row, slot in enumerate(self.tf)}
            self._grow(2 * n + 4)
        return self.slots[:n], self.tfs[:n]

    def _grow(self, capacity: int) -> None:
        rows = len(self.at)
        slots, tfs = np.empty(capacity, np.int64), np.empty(capacity, np.float64)
        slots[:rows], tfs[:rows] = self.slots[:rows], self.tfs[:rows]
        self.slots, self.tfs = slots, tfs


class BM25Index:
    """A BM25 index edited per document: :meth:`add`, :meth:`replace` and :meth:`remove` touch
    the postings of that document's terms only; nothing is rebuilt.

    Scores are bm25s's over the live documents (N, document frequencies and the average length
    of the current corpus), so an index edited in place ranks and scores exactly as one built
    anew from the same texts in the same order (``tests/test_retrieval.py``).

    Args:
        texts: Initial documents.
        keys: Their keys (distinct, hashable), in rank order for ties; default ``0, 1, ...``.

    Raises:
        ConfigError: ``keys`` is not one distinct key per text.
    """

    def __init__(self, texts: Sequence[str] = (), keys: Sequence[Hashable] | None = None) -> None:
        keys = range(len(texts)) if keys is None else keys
        if len(keys) != len(texts) or len(set(keys)) != len(keys):
            raise ConfigError(f"BM25Index takes one distinct key per text: {len(texts)} texts, "
                              f"{len(set(keys))} distinct of {len(keys)} keys")
        self._slot: dict[Hashable, int] = {key: slot for slot, key in enumerate(keys)}
        self._keys: list[Hashable] = list(keys)  # slot -> key; slots only grow, ties by slot
        terms = [_terms(text) for text in texts]
        self._docs = [counts for _, counts in terms]  # slot -> (term, tf) pairs
        lengths = [length for length, _ in terms]
        self._lengths = np.array([*lengths] + [0] * 16, dtype=np.float64)  # slot -> tokens
        self._total = sum(lengths)  # token count of the live documents
        postings: dict[str, dict[int, int]] = {}
        for slot, counts in enumerate(self._docs):
            for term, tf in counts:
                if (docs := postings.get(term)) is None:
                    postings[term] = {slot: tf}
                else:
                    docs[slot] = tf
        self._postings = {term: _Postings(tf) for term, tf in postings.items()}  # never empty
        self._scored: dict[str, tuple[list[int], array]] = {}  # term scores until the next edit

    @property
    def size(self) -> int:
        """Number of live documents."""
        return len(self._slot)

    def add(self, key: Hashable, text: str) -> None:
        """Index ``text`` under a new ``key``; on equal scores it ranks after earlier keys.

        Raises:
            ConfigError: ``key`` is already indexed.
        """
        if key in self._slot:
            raise ConfigError(f"BM25Index already holds key {key!r}; use replace()")
        slot = len(self._keys)
        if slot == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._slot[key] = slot
        self._keys.append(key)
        self._docs.append(())
        self._insert(slot, text)

    def replace(self, key: Hashable, text: str) -> None:
        """Re-index ``key``'s document as ``text``; it keeps its rank among ties.

        Raises:
            KeyError: ``key`` is not indexed.
        """
        slot = self._slot[key]
        self._delete(slot)
        self._insert(slot, text)

    def remove(self, key: Hashable) -> None:
        """Drop ``key``'s document.

        Raises:
            KeyError: ``key`` is not indexed.
        """
        self._delete(self._slot.pop(key))

    def _insert(self, slot: int, text: str) -> None:
        length, counts = _terms(text)
        self._docs[slot], self._lengths[slot] = counts, length
        self._total += length
        for term, tf in counts:
            if (postings := self._postings.get(term)) is None:
                self._postings[term] = _Postings({slot: tf})
            else:
                postings.put(slot, tf)
        self._scored.clear()  # N and the average length changed, so did every term score

    def _delete(self, slot: int) -> None:
        self._total -= int(self._lengths[slot])
        for term, _ in self._docs[slot]:
            postings = self._postings[term]
            postings.drop(slot)
            if not postings.tf:
                del self._postings[term]
        self._docs[slot] = ()
        self._scored.clear()

    def _term_scores(self, term: str) -> tuple[list[int], array]:
        """Slots holding ``term`` and their float32 BM25 term scores (memoized until an edit)."""
        scored = self._scored.get(term)
        if scored is None:
            docs, avg, lengths = self._postings[term].tf, self._total / self.size, self._lengths
            idf = _idf32(self.size, len(docs))
            # bm25s: idf * tf / (tf + k1 * (1 - b + b * len / avg len)), rounded to float32
            scored = (list(docs), array("f", [
                idf * (tf / (K1 * ((1 - B) + B * float(lengths[d]) / avg) + tf))
                for d, tf in docs.items()]))
            self._scored[term] = scored
        return scored

    def search(self, query: str, k: int) -> list[tuple[Hashable, float]]:
        """Top-``k`` documents for ``query`` with a positive BM25 score.

        Args:
            query: Free text.
            k: Most results to return (>= 0).

        Returns:
            ``(key, score)`` pairs, best first; ties keep insertion order. Documents that share
            no term with the query are left out, so fewer than ``k`` may come back. A corpus
            without any token matches nothing (bm25s refuses to index it).
        """
        terms = [t for t in tokenize(query) if t in self._postings] if k > 0 else []
        if not terms:
            return []
        if len(self._keys) >= _NUMPY_FROM:
            return self._search_numpy(terms, k)
        scores = array("f", bytes(4 * len(self._keys)))
        for term in terms:  # in query order, repeated terms counted again (as bm25s)
            docs, values = self._term_scores(term)
            for d, value in zip(docs, values, strict=True):
                scores[d] += value
        hits = [(d, s) for d, s in enumerate(scores) if s > 0]
        hits.sort(key=lambda hit: -hit[1])  # stable: ties keep slot order
        return [(self._keys[d], s) for d, s in hits[:k]]

    def _search_numpy(self, terms: list[str], k: int) -> list[tuple[Hashable, float]]:
        """:meth:`search` with numpy: every (term, document) score of the query in one
        vectorized pass (the same float64 operations, then float32), summed by ``np.add.at``
        in query-term order (float32 additions, as bm25s), then a partial sort of all scores
        for the k-th best and a sort of those at or above it."""
        postings = [self._postings[term].arrays() for term in terms]
        slots = np.concatenate([term_slots for term_slots, _ in postings])
        tfs = np.concatenate([term_tfs for _, term_tfs in postings])
        counts = [len(term_slots) for term_slots, _ in postings]
        idfs = np.repeat([_idf32(self.size, count) for count in counts], counts)
        norms = (K1 * ((1 - B) + B * self._lengths / (self._total / self.size)))[slots]
        scores = np.zeros(len(self._keys), dtype=np.float32)
        np.add.at(scores, slots, (idfs * (tfs / (norms + tfs))).astype(np.float32))
        n = len(scores)  # Lucene's idf is > 0, so no score is negative
        kth = np.partition(scores, n - k)[n - k] if k < n else 0.0  # the k-th best score
        # the k best and everything tied with the k-th (all hits when fewer score above 0)
        hit = np.flatnonzero(scores >= kth) if kth > 0 else np.flatnonzero(scores)
        order = hit[np.lexsort((hit, -scores[hit]))[:k]]
        return [(self._keys[d], float(scores[d])) for d in order]
