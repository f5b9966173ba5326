"""LoCoMo as a :class:`~memgym.envs.sources.TaskSource`: windows of dialogue turns."""

from __future__ import annotations

import re

import numpy as np

from memgym.envs.locomo.data import ADVERSARIAL, SPLITS, load_locomo
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
    full evidence of at least one QA pair; its questions are those QA pairs.

    Args:
        split: ``train`` (conversation 1), ``val`` (2), ``test`` (3-10): Memory-R1's split.
        window: Turns per instance (>= 1).
        include_adversarial: Keep category-5 questions (excluded in Memory-R1).
        data_path: ``locomo10.json`` path; default: the data dirs.
        rename_speakers: Give each window's two speakers other names (from :data:`NAMES`,
            drawn with the window's start as seed), as whole words in turns, questions and
            answers alike: training data augmentation, so that a policy trained on one
            conversation does not learn its speakers' names. Deterministic per window.

    Raises:
        ConfigError: Bad split or window, or no window holds a QA pair's evidence.
    """

    name = "locomo"

    def __init__(self, split: str = "train", window: int = 8, include_adversarial: bool = False,
                 data_path: str | None = None, rename_speakers: bool = False) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if window < 1:
            raise ConfigError(f"window must be >= 1, got {window}")
        conversations = load_locomo(data_path)
        instances = []
        for c in SPLITS[split]:
            conv = conversations[c]
            qas = [q for q in conv.qa if include_adversarial or q.category != ADVERSARIAL]
            for start in range(max(1, len(conv.turns) - window + 1)):
                turns = conv.turns[start:start + window]
                inside = [q for q in qas
                          if q.evidence[0] >= start and q.evidence[-1] < start + window]
                if not inside:
                    continue
                rename = _renamer(conv.turns, start) if rename_speakers else str
                instances.append(TaskInstance(
                    f"{conv.sample_id}:{start}",
                    tuple(StreamItem(t.dia_id, rename(t.text), t.date, rename(t.speaker))
                          for t in turns),
                    tuple(QAItem(rename(q.question), (rename(q.answer),),
                                 tuple(conv.turns[i].dia_id for i in q.evidence))
                          for q in inside)))
        if not instances:
            raise ConfigError(f"no window of {window} turns holds the evidence of a QA pair")
        super().__init__(instances)


def _renamer(turns, seed: int):
    """``text -> text`` with the conversation's speakers' names replaced as whole words by two
    distinct names of :data:`NAMES` drawn with ``seed``."""
    speakers = sorted({t.speaker for t in turns})
    names = np.random.default_rng(seed).choice(len(NAMES), size=len(speakers), replace=False)
    mapping = {old: NAMES[i] for old, i in zip(speakers, names, strict=True)}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, speakers)) + r")\b")
    return lambda text: pattern.sub(lambda m: mapping[m.group(1)], text)
