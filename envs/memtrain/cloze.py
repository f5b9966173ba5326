"""Masked-entity cloze probes over unlabeled text, and the reader that answers them from memory.

MemTrain (Self-Supervised Context Memory Training) trains memory updates without labels: the
entities of the text the memory was built from are masked and must be reconstructed from the
memory. memgym picks entities with a fixed rule (no NER model) and answers with a fixed
extractive reader, both documented here.

**Sentences**: a text is cut after ``.``, ``!`` or ``?`` followed by whitespace and an
upper-case letter, digit or opening quote/bracket, and at every line break.

**Entities** (:func:`entities`), in one left-to-right scan where an earlier alternative wins:

1. dates: ``March 3, 1867``, ``3 March 1867``, ``March 1867``;
2. numbers: a digit run with ``,`` / ``.`` separators, optionally followed by ``%`` or an
   ordinal suffix (``10th``);
3. names: capitalized words (``[A-Z]`` then word characters, ``'``, ``-``) joined by spaces or
   by the connectors ``of the de da von van del la and``; leading function words (``The``,
   ``In``, ``He`` ... see ``_LEAD``) are dropped, so a sentence's first word is no entity
   unless it is capitalized for a reason.

**Probes** (:func:`probes`): a sentence with one entity replaced by ``[MASK]``, when the entity
does not occur elsewhere in the sentence and the rest of the sentence has at least two
*plain* content words (lowercased ``[a-z0-9]+`` words of three letters or more, not stop words,
not inside any entity).

**Reader** (:func:`read`): the memory is cut into sentences, and sentences into windows of at
most :data:`READ_WINDOW` whitespace words. The reader reads the one window sharing the most
content words with the probe's context (the probe without the mask; the first such window on a
tie), provided it shares at least :data:`MIN_OVERLAP` of them, one of them plain in both the
probe and the window (outside the entities the rule finds in each). The score is
the SQuAD exact match (or token F1) of the best span of that window against the masked entity
(:func:`memgym.scoring.span_exact_match` / :func:`memgym.scoring.span_f1`): an extractive
reader that picks the right span of the right window. A memory that lists entities without the
words around them matches no probe (no plain word), nor does one of placeholders or format
text; the entity must be stored next to the words it was said with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memgym.scoring import best_span, span_exact_match, span_f1

MASK = "[MASK]"
READ_WINDOW = 48  # whitespace words per memory window the reader reads
MIN_OVERLAP = 2  # content words a window must share with a probe's context, one plain
METRICS = {"em": span_exact_match, "f1": span_f1}

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|\s*\n\s*")
_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|"
          r"November|December)")
_NAME_WORD = rf"(?!{_MONTH}\s+\d)[A-Z][\w'’-]*"  # a month before a digit starts a date
_ENTITY = re.compile(
    rf"(?P<date>{_MONTH}\s+\d{{1,2}},\s+\d{{3,4}}|\d{{1,2}}\s+{_MONTH}\s+\d{{3,4}}|"
    rf"{_MONTH}\s+\d{{3,4}})"
    r"|(?P<number>\d+(?:[.,]\d+)*(?:%|st\b|nd\b|rd\b|th\b)?)"
    rf"|(?P<name>{_NAME_WORD}(?:\s+(?:(?:of|the|de|da|von|van|del|la|and)\s+)*{_NAME_WORD})*)")
_LEAD = frozenset({
    "the", "a", "an", "in", "on", "at", "by", "for", "from", "with", "of", "to", "as",
    "after", "before", "during", "while", "when", "where", "although", "however", "but",
    "and", "or", "he", "she", "it", "they", "we", "his", "her", "its", "their", "this",
    "that", "these", "those", "there", "some", "many", "most", "one", "both", "each", "such",
    "through", "since", "despite", "because", "under", "following", "according", "among",
    "within", "until", "upon", "without", "also", "then", "thus", "today"})
_WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset({
    "the", "and", "for", "with", "that", "this", "from", "his", "her", "their", "they", "she",
    "him", "about", "after", "before", "also", "than", "into", "was", "were", "are", "has",
    "have", "had", "been", "being", "which", "who", "whom", "whose", "what", "when", "where",
    "why", "how", "its", "our", "not", "but", "can", "could", "will", "would", "should",
    "may", "might", "one", "two", "there", "these", "those", "such", "other", "more", "most",
    "some", "many", "much", "all", "any", "each", "both", "only", "over", "under", "between",
    "during"})


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see the module docstring), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def content_words(text: str) -> set[str]:
    """Lowercased ``[a-z0-9]+`` words of ``text`` of three characters or more, not in
    :data:`STOP`."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOP}


def entities(sentence: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` character spans of the entities of ``sentence`` (module rule), in
    order, non-overlapping."""
    spans = []
    for match in _ENTITY.finditer(sentence):
        start, end = match.span()
        if match.lastgroup == "name":
            words = list(re.finditer(r"\S+", match.group()))
            while words and words[0].group().lower() in _LEAD:
                words.pop(0)
            if not words:
                continue
            start += words[0].start()
        spans.append((start, end))
    return spans


@dataclass(frozen=True)
class Probe:
    """One cloze probe.

    Attributes:
        chunk: Index of the chunk (stream item) the sentence is in.
        sentence: The sentence, unmasked.
        start: Character offset of the entity in ``sentence``.
        answer: The masked entity.
    """

    chunk: int
    sentence: str
    start: int
    answer: str

    @property
    def text(self) -> str:
        """The sentence with the entity replaced by :data:`MASK`."""
        return self.sentence[:self.start] + MASK + self.sentence[self.start + len(self.answer):]

    @property
    def context(self) -> str:
        """The sentence without the entity."""
        return self.sentence[:self.start] + " " + self.sentence[self.start + len(self.answer):]


def _plain(sentence: str, spans: list[tuple[int, int]]) -> set[str]:
    """Content words of ``sentence`` outside every entity span."""
    rest, last = [], 0
    for start, end in spans:
        rest.append(sentence[last:start])
        last = end
    rest.append(sentence[last:])
    return content_words(" ".join(rest))


def probes(chunk: int, text: str) -> list[Probe]:
    """Every probe of ``text`` (chunk index ``chunk``), in reading order (module rule)."""
    out = []
    for sentence in sentences(text):
        spans = entities(sentence)
        if len(_plain(sentence, spans)) < MIN_OVERLAP:
            continue
        for start, end in spans:
            answer = sentence[start:end]
            probe = Probe(chunk, sentence, start, answer)
            if not span_exact_match(probe.context, answer):
                out.append(probe)
    return out


@dataclass(frozen=True)
class Window:
    """A window of memory the reader may read: its text, its content words and its plain ones
    (outside the entities the rule finds in the window)."""

    text: str
    words: frozenset[str]
    plain: frozenset[str]


def windows(memory: str) -> list[Window]:
    """The memory's reading windows: its sentences cut into runs of at most
    :data:`READ_WINDOW` whitespace words."""
    out = []
    for sentence in sentences(memory):
        words = sentence.split()
        for i in range(0, len(words), READ_WINDOW):
            text = " ".join(words[i:i + READ_WINDOW])
            out.append(Window(text, frozenset(content_words(text)),
                              frozenset(_plain(text, entities(text)))))
    return out


def read(probe: Probe, memory_windows: list[Window], metric: str = "em") -> tuple[str, float]:
    """Answer ``probe`` from the memory (module rule).

    Args:
        probe: The probe.
        memory_windows: :func:`windows` of the memory.
        metric: ``"em"`` or ``"f1"`` (keys of :data:`METRICS`).

    Returns:
        ``(prediction, score)``: the best span of the window read (normalized tokens; ``""``
        when no window qualifies) and its score in [0, 1] against ``probe.answer``.
    """
    context, plain = content_words(probe.context), _plain(probe.sentence, entities(probe.sentence))
    best, best_overlap = None, MIN_OVERLAP - 1
    for window in memory_windows:
        shared = context & window.words
        if len(shared) > best_overlap and shared & plain & window.plain:
            best, best_overlap = window.text, len(shared)
    if best is None:
        return "", 0.0
    return best_span(best, probe.answer), METRICS[metric](best, probe.answer)
