"""BABILong-style tasks (Kuratov et al., 2024, "BABILong: Testing the Limits of LLMs with Long
Context Reasoning-in-a-Haystack"): the facts of a bAbI-like story hidden in long filler text, at
a configurable total length in tokens, as a chunked :class:`TaskSource` for the stream envs
(memory manager, MemAgent).

BABILong draws its filler from PG-19 books; memgym draws it from the shared Wikipedia corpora
(SQuAD v2 articles, then HotpotQA paragraphs, :mod:`memgym.envs.corpora`), read in order as
one long text.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache

import numpy as np

from memgym.envs.corpora import load_hotpotqa, load_squad_v2
from memgym.envs.sources import QAItem, StreamItem, TaskInstance, UnboundedSource
from memgym.envs.synthetic.babi import BabiSource
from memgym.errors import ConfigError

CHARS_PER_TOKEN = 4
"""Characters per token of the length target (:func:`memgym.context.count_tokens`'s estimate;
SmolLM2's tokenizer gives ~3.8 on this Wikipedia text)."""

MAX_SENTENCE_CHARS = 400
"""Filler sentences longer than this are left out, so a chunk is never mostly one sentence."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=1)
def filler_sentences() -> tuple[str, ...]:
    """The filler: the sentences (20 to :data:`MAX_SENTENCE_CHARS` characters) of the SQuAD v2
    articles' paragraphs in file order, then of the HotpotQA paragraphs (each title once).

    Raises:
        DataNotFoundError: The SQuAD v2 or HotpotQA file is in no data dir.
        DataFormatError: A file does not have its schema.
    """
    texts = [p.context for article in load_squad_v2() for p in article.paragraphs]
    titles: set[str] = set()
    for question in load_hotpotqa():
        for paragraph in question.paragraphs:
            if paragraph.title not in titles:
                titles.add(paragraph.title)
                texts.append(paragraph.text)
    return tuple(s for text in texts for s in _SENTENCE.split(text.strip())
                 if 20 <= len(s) <= MAX_SENTENCE_CHARS)


class BabilongSource(UnboundedSource):
    """bAbI-like location-tracking facts (:class:`memgym.envs.synthetic.BabiSource`) hidden in
    Wikipedia filler of ``context_tokens`` tokens in all, cut into chunks.

    An instance draws a bAbI story from the instance RNG (the same story
    ``BabiSource(...).sample`` draws from that RNG state), then a random start sentence of
    :func:`filler_sentences` and as many consecutive sentences from there (wrapping around) as
    fit the length with the facts, then a position among the filler sentences for each fact
    (uniform, facts kept in story order), as BABILong inserts facts into a book. The sentences
    are joined with spaces and packed greedily into chunks of at most ``chunk_chars``
    characters (a sentence is never split), :class:`StreamItem` ``c<k>``. A question's
    evidence is the chunks that hold its story evidence; its answer is the location.

    Args:
        split: ``train`` / ``val`` / ``test``: the story's names (disjoint per split, see
            ``BabiSource``); the filler is the same text for every split.
        context_tokens: Total length of an instance, filler and facts, in tokens of
            :data:`CHARS_PER_TOKEN` characters (1,000 ... 128,000 in BABILong's range; at least
            the facts' length, at most what the corpora hold, ~770k).
        chunk_chars: Most characters per chunk (>= 2 * :data:`MAX_SENTENCE_CHARS`).
        num_entities, num_events, swap_prob, num_locations, num_questions: The story's knobs,
            as ``BabiSource`` takes them.

    Raises:
        ConfigError: A knob is out of range, or the facts alone exceed ``context_tokens``.
        DataNotFoundError: The SQuAD v2 or HotpotQA file is in no data dir.
    """

    name = "babilong"

    def __init__(self, split: str = "train", context_tokens: int = 1000,
                 chunk_chars: int = 2000, num_entities: int = 4, num_events: int = 16,
                 swap_prob: float = 0.25, num_locations: int = 6, num_questions: int = 2) -> None:
        self.story = BabiSource(split, num_entities, num_events, swap_prob, num_locations,
                                num_questions)
        if not isinstance(chunk_chars, int) or chunk_chars < 2 * MAX_SENTENCE_CHARS:
            raise ConfigError(f"chunk_chars must be an integer >= {2 * MAX_SENTENCE_CHARS}, "
                              f"got {chunk_chars!r}")
        self.filler = filler_sentences()
        most = sum(len(s) + 1 for s in self.filler) // CHARS_PER_TOKEN
        # the longest story: every event a swap of the two longest names or a longest move
        facts = num_events * (2 * max(map(len, self.story.names)) + 30)
        if not isinstance(context_tokens, int) or not (
                facts / CHARS_PER_TOKEN <= context_tokens <= most):
            least = -(-facts // CHARS_PER_TOKEN)
            raise ConfigError(f"context_tokens must be an integer in [{least}, {most}] (the "
                              f"facts of {num_events} events .. the filler corpora), got "
                              f"{context_tokens!r}")
        self.split, self.context_tokens, self.chunk_chars = split, context_tokens, chunk_chars
        # every chunk but the last holds more than chunk_chars - MAX_SENTENCE_CHARS - 1 chars
        self.max_items = (CHARS_PER_TOKEN * context_tokens
                          // (chunk_chars - MAX_SENTENCE_CHARS - 1) + 1)

    def _pack(self, sentences: list[tuple[str, str | None]]) -> tuple[list[str], dict[str, str]]:
        """Chunks of the sentences, and the chunk id of each fact (``event id -> c<k>``)."""
        chunks: list[list[str]] = [[]]
        where, length = {}, 0  # length: of " ".join(chunks[-1])
        for text, event in sentences:
            if chunks[-1] and length + 1 + len(text) > self.chunk_chars:
                chunks.append([])
                length = 0
            length += len(text) + (1 if chunks[-1] else 0)
            chunks[-1].append(text)
            if event is not None:
                where[event] = f"c{len(chunks) - 1}"
        return [" ".join(c) for c in chunks], where

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """A fresh instance; a pure function of ``rng``'s state (see :class:`TaskSource`)."""
        story = self.story.sample(rng)
        budget = CHARS_PER_TOKEN * self.context_tokens - sum(len(i.text) + 1
                                                              for i in story.items)
        start = int(rng.integers(len(self.filler)))
        filler, k = [], start
        while budget >= len(self.filler[k]) + 1:
            filler.append(self.filler[k])
            budget -= len(self.filler[k]) + 1
            k = (k + 1) % len(self.filler)
        # facts before filler sentence i (i = len(filler): after the last one)
        before = np.bincount(rng.integers(0, len(filler) + 1, size=len(story.items)),
                             minlength=len(filler) + 1)
        sentences: list[tuple[str, str | None]] = []
        facts = iter(story.items)
        for i, count in enumerate(before):
            sentences += [(fact.text, fact.id) for fact in itertools.islice(facts, int(count))]
            if i < len(filler):
                sentences.append((filler[i], None))
        chunks, where = self._pack(sentences)
        items = tuple(StreamItem(f"c{k}", text) for k, text in enumerate(chunks))
        questions = tuple(QAItem(q.question, q.answers,
                                 tuple(dict.fromkeys(where[e] for e in q.evidence)))
                          for q in story.questions)
        return TaskInstance(f"{self.name}:{self.context_tokens}:{story.id}:{start}", items,
                            questions)
