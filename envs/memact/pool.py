"""The paragraph pool MemAct's ``search`` tool runs over: one split of HotpotQA or NQ-Open.

Each split's distinct paragraphs (deduplicated by title and text) are indexed once with BM25
(cached per split and dataset, ~0.3 s for HotpotQA's train split of ~3.4k paragraphs). An
episode searches a subset: its question's own paragraphs plus distractors drawn from the other
questions of the split. Scores use the whole split's index statistics; the subset only filters
the hits.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from memgym.envs.base import clean
from memgym.envs.corpora import Paragraph, load_hotpotqa, load_nq_open
from memgym.envs.sources import split_range
from memgym.errors import ConfigError
from memgym.retrieval import BM25Index

DATASETS = ("hotpotqa", "nq")


@dataclass(frozen=True)
class PoolQuestion:
    """One question of a pool.

    Attributes:
        id: HotpotQA's question id, or ``nq:<index in the NQ-Open file>``.
        question: The question text (NQ's gets a ``?``).
        answers: Gold aliases (HotpotQA: one).
        paragraphs: Its own paragraphs: HotpotQA's 2 supporting + 8 distractors, NQ's gold
            passage (``supporting``).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    paragraphs: tuple[Paragraph, ...]


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

    questions: tuple[PoolQuestion, ...]
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


def _questions(split: str, dataset: str) -> list[PoolQuestion]:
    if dataset == "hotpotqa":
        everything = load_hotpotqa()
        return [PoolQuestion(q.id, q.question, (q.answer,), q.paragraphs)
                for q in (everything[i] for i in split_range(len(everything), split))]
    if dataset == "nq":
        nq = load_nq_open()
        return [PoolQuestion(f"nq:{i}", nq[i].question.rstrip("?") + "?", nq[i].answers,
                             (nq[i].passage,)) for i in split_range(len(nq), split)]
    raise ConfigError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


@lru_cache(maxsize=6)
def split_pool(split: str, dataset: str = "hotpotqa") -> SplitPool:
    """The cached :class:`SplitPool` of ``split`` of ``dataset``: HotpotQA's 500 dev questions
    or NQ-Open's 2,655, cut by :func:`memgym.envs.sources.split_range`.

    Raises:
        ConfigError: Unknown split or dataset.
        DataNotFoundError / DataFormatError: From the corpus loader.
    """
    questions = _questions(split, dataset)
    ids: dict[tuple[str, str], int] = {}
    own = []
    for q in questions:
        own.append(tuple(dict.fromkeys(
            ids.setdefault((p.title, " ".join(p.text.split())), len(ids)) for p in q.paragraphs)))
    titles = tuple(clean(title) for title, _ in ids)
    texts = tuple(clean(text) for _, text in ids)
    index = BM25Index([f"{t}. {x}" for t, x in zip(titles, texts, strict=True)])
    return SplitPool(tuple(questions), titles, texts, tuple(own), index)
