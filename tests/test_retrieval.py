"""memgym.retrieval.BM25Index must rank and score exactly as bm25s does."""

import bm25s
import numpy as np
import pytest

from memgym.errors import ConfigError
from memgym.retrieval import BM25Index, tokenize

WORDS = ["alpha", "beta", "gamma", "delta", "the", "and", "is", "it", "Caroline", "LGBTQ",
         "support", "group", "x", "7", "42", "café", "naïve", "don't", "co-op", "2023"]


def _bm25s_search(texts, query, k):
    """The reference: bm25s over the same texts (what BM25Index used to wrap)."""
    tokens = bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    query_tokens = bm25s.tokenize([query], stopwords="en", return_ids=False,
                                  show_progress=False)[0]
    if not query_tokens:
        return []
    scores = retriever.get_scores(query_tokens)
    order = np.lexsort((np.arange(len(texts)), -scores))[:k]
    return [(int(i), float(scores[i])) for i in order if scores[i] > 0]


def _text(rng, lo, hi):
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))).tolist())


@pytest.mark.parametrize("seed", range(40))
def test_rankings_and_scores_equal_bm25s(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(256, 400)) if seed % 10 == 9 else int(rng.integers(1, 30))
    texts = [_text(rng, 0, 12) for _ in range(size)]  # large sizes take the numpy path
    texts[0] += " alpha"  # at least one token, else bm25s cannot build an index
    index = BM25Index(texts)
    for _ in range(10):
        query = _text(rng, 0, 8)
        k = int(rng.integers(0, len(texts) + 2))
        assert index.search(query, k) == _bm25s_search(texts, query, k)


def test_tokenizer_matches_bm25s():
    text = "The café's CO-OP in 2023: naïve x y zz, Don't STOP!"
    (expected,) = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)
    assert list(tokenize(text)) == expected


def test_corpus_without_tokens_matches_nothing():
    assert BM25Index(["the it is", "", "x"]).search("alpha it", 3) == []
    assert BM25Index([]).search("alpha", 3) == []


@pytest.mark.parametrize("seed", range(12))
def test_edited_index_equals_bm25s_over_the_live_texts(seed):
    """add / replace / remove edit the index in place; it must rank and score exactly as bm25s
    built anew over the live documents in key order (ties: earlier key first)."""
    rng = np.random.default_rng(100 + seed)
    live = {key: _text(rng, 1, 12) for key in range(seed % 4 * 10)}  # built, then edited
    index, next_key = BM25Index(list(live.values())), len(live)
    steps = 600 if seed % 3 == 2 else 100  # past 256 slots (~310 adds) the numpy path ranks
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.2 and live:
            key = int(rng.choice(list(live)))
            index.remove(key)
            del live[key]
        elif roll < 0.35 and live:
            key = int(rng.choice(list(live)))
            live[key] = _text(rng, 1, 12)
            index.replace(key, live[key])
        else:
            live[next_key] = _text(rng, 1, 12)
            index.add(next_key, live[next_key])
            next_key += 1
        if rng.random() < 0.3 and any(tokenize(t) for t in live.values()):
            keys, texts = list(live), list(live.values())
            query, k = _text(rng, 1, 8), int(rng.integers(1, 8))
            expected = [(keys[i], s) for i, s in _bm25s_search(texts, query, k)]
            assert index.search(query, k) == expected
    assert index.size == len(live)


def test_index_refuses_a_key_twice():
    index = BM25Index(["alpha beta"])
    with pytest.raises(ConfigError, match="already holds key 0"):
        index.add(0, "gamma")
    with pytest.raises(KeyError):
        index.remove(7)
