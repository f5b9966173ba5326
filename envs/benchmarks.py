"""Benchmarks evaluated whole (:mod:`memgym.rollouts.whole_eval`): which source keyword picks
one instance, what makes an instance whole, and the table order of its question categories."""

from __future__ import annotations

from dataclasses import dataclass, field

from memgym.envs.longmemeval.data import CATEGORY_ORDER as LONGMEMEVAL_ORDER


@dataclass(frozen=True)
class Benchmark:
    """How a benchmark's instances are evaluated whole.

    Attributes:
        name: Shown in the table's title (``"LoCoMo"``).
        env_id: The default env (a memory manager on the benchmark's source).
        select: The source keyword that picks one instance (0-based), e.g. ``conversation``.
        categories: Table order of the question categories.
        whole: Env kwargs that make every instance whole (e.g. ``{"window": None}``).
        splits: Help text for the splits.
    """

    name: str
    env_id: str
    select: str
    categories: tuple[str, ...]
    whole: dict = field(default_factory=dict)
    splits: str = "test"


BENCHMARKS: dict[str, Benchmark] = {
    # Memory-R1's table order of LoCoMo's categories (adversarial ones are excluded by default)
    "locomo": Benchmark("LoCoMo", "memgym/LoCoMoMemoryManager-v1", "conversation",
                        ("single-hop", "multi-hop", "temporal", "open-domain", "adversarial"),
                        {"window": None}, "test (conversations 3-10), val or train"),
    # LongMemEval's reported question types (Wu et al., ICLR 2025), then the sample's others
    "longmemeval": Benchmark("LongMemEval", "memgym/LongMemEvalMemoryManager-v1", "haystack",
                             LONGMEMEVAL_ORDER, {}, "test (every haystack of the variant)"),
}
