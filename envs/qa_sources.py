"""SQuAD v2 and HotpotQA as :class:`~memgym.envs.sources.TaskSource` s (document streams).

Both are finite: their instances are built once from the cached corpora loaders and split with
:func:`~memgym.envs.sources.split_range` (SQuAD by article, HotpotQA by question, in file order),
so no article or question is shared between splits. Stream items are paragraphs: ``id`` is
``"p<index>"``, ``speaker`` is the document title, ``date`` is empty.
"""

from __future__ import annotations

import numpy as np

from memgym.envs.corpora import load_hotpotqa, load_squad_v2
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance, split_range
from memgym.errors import ConfigError


class SquadSource(FiniteSource):
    """Windows of ``paragraphs`` consecutive paragraphs of one SQuAD v2 article (non-overlapping,
    from the article's start) with up to ``questions`` of their answerable questions.

    The questions of a window are drawn once, with an RNG seeded by (article index, window
    start), so instance ``i`` is the same in every process; they are listed in paragraph order
    and each cites its paragraph as evidence. Unanswerable questions are left out.

    Args:
        split: ``train`` / ``val`` / ``test``: 70/10/20% of the 16 articles, in file order.
        paragraphs: Paragraphs per instance (>= 1); a shorter article tail is dropped.
        questions: Most questions per instance (>= 1).

    Raises:
        ConfigError: Bad split, ``paragraphs`` or ``questions``.
    """

    name = "squad"

    def __init__(self, split: str = "train", paragraphs: int = 4, questions: int = 4) -> None:
        if paragraphs < 1 or questions < 1:
            raise ConfigError(f"paragraphs and questions must be >= 1, got {paragraphs} and "
                              f"{questions}")
        articles = load_squad_v2()
        instances = []
        for a in split_range(len(articles), split):
            article = articles[a]
            for start in range(0, len(article.paragraphs) - paragraphs + 1, paragraphs):
                window = range(start, start + paragraphs)
                qas = [QAItem(q.question, q.answers, (f"p{p}",))
                       for p in window for q in article.paragraphs[p].questions if q.answers]
                if not qas:
                    continue
                rng = np.random.default_rng([a, start])
                chosen = sorted(rng.choice(len(qas), min(questions, len(qas)), replace=False))
                instances.append(TaskInstance(
                    f"{article.title}:{start}",
                    tuple(StreamItem(f"p{p}", article.paragraphs[p].context, "", article.title)
                          for p in window),
                    tuple(qas[int(i)] for i in chosen)))
        super().__init__(instances)


class HotpotQASource(FiniteSource):
    """One HotpotQA (distractor) question per instance: its 10 paragraphs (2 supporting, 8
    distractors) in the given order, and the question citing its supporting paragraphs.

    Args:
        split: ``train`` / ``val`` / ``test``: 70/10/20% of the 500 questions, in file order.

    Raises:
        ConfigError: Bad split.
    """

    name = "hotpotqa"

    def __init__(self, split: str = "train") -> None:
        questions = load_hotpotqa()
        instances = []
        for i in split_range(len(questions), split):
            q = questions[i]
            items = tuple(StreamItem(f"p{k}", p.text, "", p.title)
                          for k, p in enumerate(q.paragraphs))
            evidence = tuple(f"p{k}" for k, p in enumerate(q.paragraphs) if p.supporting)
            instances.append(TaskInstance(q.id, items, (QAItem(q.question, (q.answer,),
                                                               evidence),)))
        super().__init__(instances)
