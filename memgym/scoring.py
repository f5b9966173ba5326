"""Answer scoring: SQuAD-style normalized exact match and token F1, BLEU-1, and answer spans.

EM and F1 follow the official SQuAD v1.1 evaluation script (lowercase, strip punctuation and the
articles a/an/the, collapse whitespace). BLEU-1 is clipped unigram precision times the brevity
penalty (Papineni et al., 2002), as LoCoMo/Memory-R1 report it. They are hand-written because
they are a few lines each and the reference libraries (``evaluate``, ``nltk``) would add heavy
dependencies for them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_MONTH = ("January|February|March|April|May|June|July|August|September|October|November|"
          "December")
_DATE = re.compile(rf"\b(?:(?:{_MONTH}) \d{{1,2}}, )?(?:1\d{{3}}|20\d{{2}})\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"(?:[A-Z][\w'.-]*|\d[\d,.]*)"
                   r"(?:\s+(?:of|the|de|and|von|van)?\s*(?:[A-Z][\w'.-]*|\d[\d,.]*))*")
_FILLER = {"the", "a", "an", "in", "on", "it", "he", "she", "this", "they", "his", "her"}
_PUNCT = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace
    (cached: answer agents score the same memories and answers again and again)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


@lru_cache(maxsize=1 << 16)
def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalization, in [0, 1] (cached).

    Two empty answers score 1.0; exactly one empty answer scores 0.0 (SQuAD v2 convention).
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, gold: str) -> float:
    """Sentence BLEU-1: clipped unigram precision × brevity penalty, in [0, 1]."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    clipped = sum((Counter(pred) & Counter(ref)).values())
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * clipped / len(pred)


def _best_span(tokens: list[str], ref: list[str]) -> tuple[float, int, int]:
    """(token F1, start, end) of the best span ``tokens[start:end]`` against ``ref`` (both
    non-empty); (0.0, 0, 0) when no token is shared.

    Only spans that start and end on a gold token can be best (trimming any other end token
    raises precision and keeps recall), so those are the ones scored: O(len(tokens)²).
    """
    need, best = Counter(ref), (0.0, 0, 0)
    for i, first in enumerate(tokens):
        if first not in need:
            continue
        have, common = Counter(), 0
        for j in range(i, len(tokens)):
            token = tokens[j]
            if token not in need:
                continue
            have[token] += 1
            if have[token] <= need[token]:
                common += 1
            precision, recall = common / (j - i + 1), common / len(ref)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best[0]:
                best = (f1, i, j + 1)
    return best


@lru_cache(maxsize=1 << 16)
def span_f1(text: str, gold: str) -> float:
    """Token F1 of the best contiguous token span of ``text`` against ``gold``, in [0, 1]
    (cached): how well an extractive reader that picks the right span of ``text`` would answer,
    as SQuAD scores a span. 1.0 when the normalized gold answer occurs in ``text``.
    """
    tokens, ref = normalize_answer(text).split(), normalize_answer(gold).split()
    if not tokens or not ref:
        return float(tokens == ref)
    return _best_span(tokens, ref)[0]


def best_span(text: str, gold: str) -> str:
    """The span of ``text`` (normalized tokens, space-joined) whose token F1 against ``gold`` is
    :func:`span_f1`'s; the first such span, ``""`` if they share no token. What an extractive
    reader that picks the right span answers: its EM, F1 and BLEU-1 against ``gold`` bound
    any reader's over the same text from above (EM and F1 exactly; BLEU-1 is taken at it)."""
    tokens, ref = normalize_answer(text).split(), normalize_answer(gold).split()
    if not tokens or not ref:
        return ""
    _, start, end = _best_span(tokens, ref)
    return " ".join(tokens[start:end])


def span_exact_match(text: str, gold: str) -> float:
    """1.0 if the normalized gold answer is a contiguous token span of ``text``, else 0.0."""
    tokens, ref = normalize_answer(text).split(), normalize_answer(gold).split()
    if not ref:
        return float(not tokens)
    return float(f" {' '.join(ref)} " in f" {' '.join(tokens)} ")


def surface_span(aliases: Sequence[str], text: str) -> str | None:
    """The first of ``aliases`` that ``text`` holds, as ``text`` writes it (case-insensitive, on
    word boundaries), else None: a gold answer an imitator can copy from what it reads, with the
    alias's EM. Scripted teachers answer it (MEM1's and MemAct's oracles)."""
    for alias in aliases:
        found = re.search(rf"(?<!\w){re.escape(alias)}(?!\w)", text, re.IGNORECASE)
        if found:
            return found.group(0)
    return None


def extract_answer(question: str, title: str, passage: str) -> str:
    """A short answer span for ``question`` from its top passage (rule-based, no model): what
    the search-then-extract heuristics of MEM1 and MemAct answer.

    ``when`` / ``what year`` / ``which year``: the first date or year; ``how many`` / ``how
    much``: the first number; otherwise the first capitalized (or numeric) phrase whose words
    are not all in the question. Falls back to the passage title. Never contains ``;`` or ``|``.
    """
    lowered, asked = question.lower(), set(normalize_answer(question).split())
    if lowered.startswith("when") or "what year" in lowered or "which year" in lowered:
        pattern = _DATE
    elif "how many" in lowered or "how much" in lowered:
        pattern = _NUMBER
    else:
        pattern = _NAME
    for match in pattern.finditer(passage):
        span = match.group(0).strip(" .,")
        if (span and span.lower() not in _FILLER
                and not set(normalize_answer(span).split()) <= asked):
            return span
    return title.replace(";", ",").replace("|", "/")
