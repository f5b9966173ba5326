"""HotpotQA "in a haystack" (RULER-HotpotQA style) as a chunked :class:`TaskSource`."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from memgym.envs.corpora import HotpotQuestion, Paragraph, load_hotpotqa
from memgym.envs.sources import QAItem, StreamItem, TaskInstance, UnboundedSource, split_range
from memgym.errors import ConfigError

SEPARATOR = "\n\n"
_MAX_DRAWS = 64  # consecutive rejected padding draws after which padding stops


@lru_cache(maxsize=4)
def _split_questions(split: str) -> tuple[HotpotQuestion, ...]:
    questions = load_hotpotqa()
    return tuple(questions[i] for i in split_range(len(questions), split))


def _render(index: int, paragraph: Paragraph) -> str:
    return f"Document {index}:\n{paragraph.title}\n{paragraph.text}"


def chunk_spans(text: str, size: int) -> list[tuple[int, int]]:
    """Cut ``text`` into consecutive ``[start, end)`` character spans of at most ``size`` chars.

    A span ends at the last space or newline of its final tenth when there is one (so words
    are rarely split), else exactly at ``size``; whitespace between spans belongs to none.
    Every span but the last is therefore at least ``size - size // 10`` chars long.

    Args:
        text: The document.
        size: Most characters per span (>= 1).

    Returns:
        The spans in order; empty for an empty (or all-whitespace) text.
    """
    spans: list[tuple[int, int]] = []
    start, n = len(text) - len(text.lstrip()), len(text.rstrip())
    while start < n:
        end = min(start + size, n)
        if end < n:
            cut = max(text.rfind(" ", end - size // 10, end), text.rfind("\n", end - size // 10,
                                                                          end))
            end = cut if cut > start else end
        spans.append((start, end))
        start = end
        while start < n and text[start].isspace():
            start += 1
    return spans


class HotpotHaystackSource(UnboundedSource):
    """HotpotQA questions whose 10 paragraphs (2 gold + 8 distractors) are padded with
    paragraphs of *other* questions of the split up to ``context_chars``, shuffled, rendered as
    ``Document k:\\n<title>\\n<text>`` and cut into chunks of at most ``chunk_chars`` (RULER's
    HotpotQA task as MemAgent trains on it, at a CPU-sized length).

    Padding draws paragraphs uniformly (with the instance RNG) from the split's other
    questions, skipping titles already in the document and paragraphs that would overflow
    ``context_chars``; it stops at ``context_chars`` or after 64 consecutive skipped draws. A
    question whose own paragraphs exceed ``context_chars`` gets no padding.

    Each chunk is a :class:`StreamItem` with id ``c<k>``; the one question's evidence is the ids
    of the chunks overlapping a supporting paragraph. The source is unbounded
    (``num_instances`` is None) because padding and order are sampled.

    Args:
        split: ``train`` / ``val`` / ``test`` over the 500 dev questions in file order
            (:func:`memgym.envs.sources.split_range`: 350 / 50 / 100).
        context_chars: Target document length in characters (>= 0; ~4 chars per LLM token).
        chunk_chars: Most characters per chunk (>= 100).

    Raises:
        ConfigError: Bad split or length.
        DataNotFoundError: The HotpotQA file is in no data dir.
    """

    name = "hotpotqa-haystack"

    def __init__(self, split: str = "train", context_chars: int = 6000,
                 chunk_chars: int = 2000) -> None:
        if context_chars < 0:
            raise ConfigError(f"context_chars must be >= 0, got {context_chars}")
        if chunk_chars < 100:
            raise ConfigError(f"chunk_chars must be >= 100, got {chunk_chars}")
        self.questions = _split_questions(split)
        self.context_chars, self.chunk_chars = context_chars, chunk_chars
        self.pool = tuple((qi, p) for qi, q in enumerate(self.questions) for p in q.paragraphs)
        longest = max(self._length(q.paragraphs) for q in self.questions)
        # A document is at most max(longest own, context_chars) chars; every chunk but the last
        # holds at least chunk_chars - chunk_chars // 10 of them (see chunk_spans).
        self.max_items = max(longest, context_chars) // (chunk_chars - chunk_chars // 10) + 1

    @staticmethod
    def _length(paragraphs: tuple[Paragraph, ...] | list[Paragraph]) -> int:
        """Rendered length with the widest document numbers the padding can reach (4 digits)."""
        return sum(len(_render(1000, p)) + len(SEPARATOR) for p in paragraphs)

    def _pad(self, qi: int, rng: np.random.Generator) -> list[Paragraph]:
        paragraphs = list(self.questions[qi].paragraphs)
        titles = {p.title for p in paragraphs}
        length, misses = self._length(paragraphs), 0
        while misses < _MAX_DRAWS and length < self.context_chars:
            other, paragraph = self.pool[int(rng.integers(len(self.pool)))]
            extra = self._length([paragraph])
            if other == qi or paragraph.title in titles or length + extra > self.context_chars:
                misses += 1
                continue
            paragraphs.append(Paragraph(paragraph.title, paragraph.text, False))
            titles.add(paragraph.title)
            length, misses = length + extra, 0
        return [paragraphs[i] for i in rng.permutation(len(paragraphs))]

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """See :class:`memgym.envs.sources.TaskSource`."""
        qi = int(rng.integers(len(self.questions)))
        question = self.questions[qi]
        parts, gold, offset = [], [], 0
        for k, paragraph in enumerate(self._pad(qi, rng), start=1):
            rendered = _render(k, paragraph)
            if paragraph.supporting:
                gold.append((offset, offset + len(rendered)))
            parts.append(rendered)
            offset += len(rendered) + len(SEPARATOR)
        document = SEPARATOR.join(parts)
        spans = chunk_spans(document, self.chunk_chars)
        items = tuple(StreamItem(f"c{k}", document[s:e]) for k, (s, e) in enumerate(spans))
        evidence = tuple(f"c{k}" for k, (s, e) in enumerate(spans)
                         if any(s < g_end and g_start < e for g_start, g_end in gold))
        return TaskInstance(f"{question.id}:{len(parts)}p", items,
                            (QAItem(question.question, (question.answer,), evidence),))
