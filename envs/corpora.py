"""Loaders for the QA corpora in the data dir: HotpotQA (distractor), SQuAD v2, NQ-Open.

See each ``SOURCE.md`` under ``../shared/data``. Records are frozen dataclasses; every loader is
cached and checks the file's sha256 pinned in :data:`memgym.data.DATASETS`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache

from memgym.data import find_data_file
from memgym.errors import DataFormatError

HOTPOTQA_FILE = "hotpotqa/hotpotqa_dev_distractor_ircot500.jsonl"
SQUAD_FILE = "squad_v2/squad_v2_dev_cs224n_half.json"
NQ_FILE = "lost_in_the_middle/nq-open-oracle.jsonl.gz"


@dataclass(frozen=True)
class Paragraph:
    """A titled passage; ``supporting`` marks HotpotQA's gold paragraphs."""

    title: str
    text: str
    supporting: bool = False


@dataclass(frozen=True)
class HotpotQuestion:
    """A HotpotQA multi-hop question with its 10 (2 gold + 8 distractor) paragraphs."""

    id: str
    question: str
    answer: str
    paragraphs: tuple[Paragraph, ...]


@dataclass(frozen=True)
class SquadQuestion:
    """A SQuAD v2 question; ``answers`` is empty when it is unanswerable."""

    id: str
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class SquadParagraph:
    """One paragraph of an article with the questions asked about it."""

    context: str
    questions: tuple[SquadQuestion, ...]


@dataclass(frozen=True)
class SquadArticle:
    """A Wikipedia article of SQuAD v2 as a sequence of paragraphs."""

    title: str
    paragraphs: tuple[SquadParagraph, ...]


@dataclass(frozen=True)
class NQQuestion:
    """An NQ-Open question with its gold answers and gold passage."""

    question: str
    answers: tuple[str, ...]
    passage: Paragraph


@lru_cache(maxsize=1)
def load_hotpotqa() -> tuple[HotpotQuestion, ...]:
    """The 500 HotpotQA dev questions (distractor setting), in file order.

    Raises:
        DataNotFoundError: The file is in no data dir.
        DataFormatError: The file is not the IRCoT-processed schema.
    """
    path = find_data_file(HOTPOTQA_FILE)
    try:
        out = []
        for line in path.read_text().splitlines():
            raw = json.loads(line)
            out.append(HotpotQuestion(
                raw["question_id"], raw["question_text"],
                raw["answers_objects"][0]["spans"][0],
                tuple(Paragraph(c["title"], c["paragraph_text"], bool(c["is_supporting"]))
                      for c in raw["contexts"])))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: not the IRCoT HotpotQA schema ({exc!r})") from exc
    return tuple(out)


@lru_cache(maxsize=1)
def load_squad_v2() -> tuple[SquadArticle, ...]:
    """The 16 SQuAD v2 dev articles (CS224N half), in file order.

    Raises:
        DataNotFoundError: The file is in no data dir.
        DataFormatError: The file is not SQuAD v2's schema.
    """
    path = find_data_file(SQUAD_FILE)
    try:
        out = []
        for article in json.loads(path.read_text())["data"]:
            paragraphs = tuple(SquadParagraph(p["context"], tuple(
                SquadQuestion(q["id"], q["question"],
                              tuple(dict.fromkeys(a["text"] for a in q["answers"])))
                for q in p["qas"])) for p in article["paragraphs"])
            out.append(SquadArticle(article["title"], paragraphs))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: not SQuAD v2's schema ({exc!r})") from exc
    return tuple(out)


@lru_cache(maxsize=1)
def load_nq_open() -> tuple[NQQuestion, ...]:
    """The 2,655 NQ-Open questions with their gold passage (lost-in-the-middle oracle file).

    Raises:
        DataNotFoundError: The file is in no data dir.
        DataFormatError: The file is not the expected schema.
    """
    path = find_data_file(NQ_FILE)
    try:
        out = []
        with gzip.open(path, "rt") as f:
            for line in f:
                raw = json.loads(line)
                gold = next(c for c in raw["ctxs"] if c.get("isgold"))
                out.append(NQQuestion(raw["question"], tuple(raw["answers"]),
                                      Paragraph(gold["title"], gold["text"], True)))
    except (KeyError, StopIteration, TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: not the NQ-Open oracle schema ({exc!r})") from exc
    return tuple(out)
