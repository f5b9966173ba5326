"""LoCoMo as a :class:`~memgym.envs.sources.TaskSource`: windows of dialogue turns."""

from __future__ import annotations

import re

import numpy as np

from memgym.envs.locomo.data import ADVERSARIAL, CATEGORIES, SPLITS, load_locomo
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance
from memgym.errors import ConfigError

# Speaker names for ``rename_speakers``: no word of LoCoMo's ten conversations is one of them
NAMES = ("Alice", "Bob", "Priya", "Omar", "Sofia", "Liam", "Chen", "Fatima", "Diego", "Hannah",
         "Kofi", "Yuki", "Elena", "Marcus", "Aisha", "Pavel", "Noor", "Lucas", "Mei", "Tariq",
         "Ingrid", "Rafael", "Zoe", "Kenji", "Amara", "Felix", "Leila", "Soren", "Nadia", "Hugo",
         "Rosa", "Ivan", "Grace", "Mateo", "Sana", "Theo", "Freya", "Ali", "Clara", "Emeka",
         "Lena", "Ravi", "Ines", "Bruno", "Maya", "Sergei", "Olivia", "Kwame")


class LoCoMoSource(FiniteSource):
    """Every window of ``window`` consecutive turns of the split's conversations that holds the
    full evidence of at least one QA pair; its questions are those QA pairs. With
    ``window=None``, each conversation whole with all its QA pairs (Memory-R1's test protocol:
    read every turn, then answer every question).

    Args:
        split: ``train`` (conversation 1), ``val`` (2), ``test`` (3-10): Memory-R1's split;
            ``train-wide`` (1 and 3-10): every conversation but validation's.
        window: Turns per instance (>= 1), or None for whole conversations.
        conversation: Only this conversation of the split (0-based index into it; ``test``
            has 0-7), or None for all of them.
        include_adversarial: Keep category-5 questions (excluded in Memory-R1).
        data_path: ``locomo10.json`` path; default: the data dirs.
        rename_speakers: Give each window's two speakers other names (from :data:`NAMES`,
            drawn with the window's start as seed), as whole words in turns, questions and
            answers alike: training data augmentation, so that a policy trained on one
            conversation does not learn its speakers' names. Deterministic per window.

    Raises:
        ConfigError: Bad split, window or conversation, or no window holds a QA pair's
            evidence.
    """

    name = "locomo"

    def __init__(self, split: str = "train", window: int | None = 8,
                 include_adversarial: bool = False, data_path: str | None = None,
                 rename_speakers: bool = False, conversation: int | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if window is not None and window < 1:
            raise ConfigError(f"window must be >= 1 or None, got {window}")
        chosen = SPLITS[split]
        if conversation is not None:
            if not 0 <= conversation < len(chosen):
                raise ConfigError(f"conversation must be in [0, {len(chosen)}) for split "
                                  f"{split!r}, got {conversation}")
            chosen = (chosen[conversation],)
        conversations = load_locomo(data_path)
        instances = []
        for c in chosen:
            conv = conversations[c]
            qas = [q for q in conv.qa if include_adversarial or q.category != ADVERSARIAL]
            size = len(conv.turns) if window is None else window
            for start in range(max(1, len(conv.turns) - size + 1)):
                turns = conv.turns[start:start + size]
                inside = [q for q in qas
                          if q.evidence[0] >= start and q.evidence[-1] < start + size]
                if not inside:
                    continue
                rename = _renamer(conv.turns, start) if rename_speakers else str
                instances.append(TaskInstance(
                    f"{conv.sample_id}:{start}",
                    tuple(StreamItem(t.dia_id, rename(t.text), t.date, rename(t.speaker))
                          for t in turns),
                    tuple(QAItem(rename(q.question), (rename(q.answer),),
                                 tuple(conv.turns[i].dia_id for i in q.evidence),
                                 CATEGORIES[q.category])
                          for q in inside)))
        if not instances:
            raise ConfigError(f"no window of {size} turns holds the evidence of a QA pair")
        super().__init__(instances)


def _renamer(turns, seed: int):
    """``text -> text`` with the conversation's speakers' names replaced as whole words by two
    distinct names of :data:`NAMES` drawn with ``seed``."""
    speakers = sorted({t.speaker for t in turns})
    names = np.random.default_rng(seed).choice(len(NAMES), size=len(speakers), replace=False)
    mapping = {old: NAMES[i] for old, i in zip(speakers, names, strict=True)}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, speakers)) + r")\b")
    return lambda text: pattern.sub(lambda m: mapping[m.group(1)], text)
