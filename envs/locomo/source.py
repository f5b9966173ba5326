"""LoCoMo as a :class:`~memgym.envs.sources.TaskSource`: windows of dialogue turns."""

from __future__ import annotations

from memgym.envs.locomo.data import ADVERSARIAL, SPLITS, load_locomo
from memgym.envs.sources import FiniteSource, QAItem, StreamItem, TaskInstance
from memgym.errors import ConfigError


class LoCoMoSource(FiniteSource):
    """Every window of ``window`` consecutive turns of the split's conversations that holds the
    full evidence of at least one QA pair; its questions are those QA pairs.

    Args:
        split: ``train`` (conversation 1), ``val`` (2), ``test`` (3-10): Memory-R1's split.
        window: Turns per instance (>= 1).
        include_adversarial: Keep category-5 questions (excluded in Memory-R1).
        data_path: ``locomo10.json`` path; default: the data dirs.

    Raises:
        ConfigError: Bad split or window, or no window holds a QA pair's evidence.
    """

    name = "locomo"

    def __init__(self, split: str = "train", window: int = 8, include_adversarial: bool = False,
                 data_path: str | None = None) -> None:
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
                instances.append(TaskInstance(
                    f"{conv.sample_id}:{start}",
                    tuple(StreamItem(t.dia_id, t.text, t.date, t.speaker) for t in turns),
                    tuple(QAItem(q.question, (q.answer,),
                                 tuple(conv.turns[i].dia_id for i in q.evidence))
                          for q in inside)))
        if not instances:
            raise ConfigError(f"no window of {window} turns holds the evidence of a QA pair")
        super().__init__(instances)
