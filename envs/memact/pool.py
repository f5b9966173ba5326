"""The paragraph pool MemAct's ``search`` tool runs over: HotpotQA paragraphs of one split.

Each split's distinct paragraphs (deduplicated by title and text) are indexed once with BM25
(cached per split, ~0.3 s for the train split's ~3.4k paragraphs). An episode searches a subset:
its question's own paragraphs plus distractors drawn from the other questions of the split.
Scores use the whole split's index statistics; the subset only filters the hits.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from memgym.envs.base import clean
from memgym.envs.corpora import HotpotQuestion, load_hotpotqa
from memgym.envs.sources import split_range
from memgym.retrieval import BM25Index


@dataclass(frozen=True)
class SplitPool:
    """The searchable paragraphs of one split.

    Attributes:
        questions: The split's questions, in file order.
        titles: Title of each distinct paragraph (cleaned).
        texts: Text of each distinct paragraph, whitespace-normalized and cleaned.
        own: For each question, the indices (into ``titles``) of its own paragraphs.
        index: BM25 over ``"title. text"`` of each paragraph.
    """

    questions: tuple[HotpotQuestion, ...]
    titles: tuple[str, ...]
    texts: tuple[str, ...]
    own: tuple[tuple[int, ...], ...]
    index: BM25Index

    def __len__(self) -> int:
        return len(self.titles)

    def search(self, query: str, k: int, allowed: Collection[int]) -> list[int]:
        """Indices of the top-``k`` BM25 hits for ``query`` among ``allowed``, best first.

        Paragraphs sharing no term with the query are never returned, so fewer than ``k``
        may come back; ties keep index order.
        """
        hits = (i for i, _ in self.index.search(query, len(self)) if i in allowed)
        return [i for _, i in zip(range(k), hits, strict=False)]


@lru_cache(maxsize=3)
def split_pool(split: str) -> SplitPool:
    """The cached :class:`SplitPool` of ``split`` (HotpotQA dev 500 cut by ``split_range``).

    Raises:
        ConfigError: Unknown split.
        DataNotFoundError / DataFormatError: From :func:`load_hotpotqa`.
    """
    everything = load_hotpotqa()
    questions = tuple(everything[i] for i in split_range(len(everything), split))
    ids: dict[tuple[str, str], int] = {}
    own = []
    for q in questions:
        own.append(tuple(dict.fromkeys(
            ids.setdefault((p.title, " ".join(p.text.split())), len(ids)) for p in q.paragraphs)))
    titles = tuple(clean(title) for title, _ in ids)
    texts = tuple(clean(text) for _, text in ids)
    index = BM25Index([f"{t}. {x}" for t, x in zip(titles, texts, strict=True)])
    return SplitPool(questions, titles, texts, tuple(own), index)
