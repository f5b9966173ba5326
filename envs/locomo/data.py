"""Loader for LoCoMo's ``locomo10.json`` (see ../shared/data/locomo/SOURCE.md)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from memgym.data import find_data_file
from memgym.errors import ConfigError, DataFormatError

LOCOMO_FILE = "locomo/locomo10.json"
# Memory-R1's split by conversation: conv 1 train, conv 2 val, conv 3-10 test. ``train-wide``:
# every conversation but val's (1 and 3-10), for runs that report validation only: nine
# conversations' turns to learn from, not one, at the cost of a held-out test split.
SPLITS: dict[str, tuple[int, ...]] = {"train": (0,), "val": (1,), "test": tuple(range(2, 10))}
SPLITS["train-wide"] = SPLITS["train"] + SPLITS["test"]
ADVERSARIAL = 5
# LoCoMo's category numbers (its paper's Table 2 and Memory-R1's tables)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop",
              5: "adversarial"}
_DIA_ID = re.compile(r"D\d+:\d+")


@dataclass(frozen=True)
class Turn:
    """One dialogue turn: ``dia_id`` like ``"D1:3"``, session date string, speaker and text."""

    dia_id: str
    session: int
    date: str
    speaker: str
    text: str


@dataclass(frozen=True)
class QA:
    """A question with its gold answer, evidence turn indices (into ``Conversation.turns``) and
    LoCoMo category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial)."""

    question: str
    answer: str
    evidence: tuple[int, ...]
    category: int


@dataclass(frozen=True)
class Conversation:
    """One LoCoMo conversation: its turns in order and its QA pairs."""

    sample_id: str
    turns: tuple[Turn, ...]
    qa: tuple[QA, ...]


def _turns(conv: dict) -> list[Turn]:
    sessions = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
    turns = []
    for n in sessions:
        date = conv.get(f"session_{n}_date_time", "")
        for t in conv[f"session_{n}"]:
            text = t["text"]
            if t.get("blip_caption"):
                text = f"{text} [shares a photo of {t['blip_caption']}]"
            turns.append(Turn(t["dia_id"], n, date, t["speaker"], text))
    return turns


def _qa(raw: dict, index: dict[str, int]) -> QA | None:
    category = int(raw["category"])
    answer = raw.get("answer", raw.get("adversarial_answer") if category != ADVERSARIAL else None)
    if category == ADVERSARIAL:
        answer = "Not mentioned in the conversation"
    evidence = [index[d] for e in raw.get("evidence", []) for d in _DIA_ID.findall(e) if d in index]
    if answer is None or not evidence:
        return None  # a few QA pairs cite no turn that exists; they cannot be windowed
    return QA(raw["question"], str(answer), tuple(sorted(set(evidence))), category)


@lru_cache(maxsize=4)
def load_locomo(path: str | None = None) -> tuple[Conversation, ...]:
    """Load the 10 LoCoMo conversations.

    Args:
        path: ``locomo10.json``; default: found in the data dirs (``memgym.data``) and checked
            against its pinned sha256.

    Returns:
        Conversations in file order (conv-26 first).

    Raises:
        DataNotFoundError: The file is in no data dir.
        DataFormatError: The file is not LoCoMo's schema.
    """
    file = Path(path) if path else find_data_file(LOCOMO_FILE)
    if not file.is_file():
        raise ConfigError(f"LoCoMo file {file} does not exist")
    try:
        raw = json.loads(file.read_text())
        conversations = []
        for sample in raw:
            turns = _turns(sample["conversation"])
            index = {t.dia_id: i for i, t in enumerate(turns)}
            qa = tuple(q for q in (_qa(r, index) for r in sample["qa"]) if q is not None)
            conversations.append(Conversation(sample["sample_id"], tuple(turns), qa))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(f"{file}: not LoCoMo's locomo10.json schema ({exc!r})") from exc
    return tuple(conversations)
