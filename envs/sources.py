"""Task sources: what an env's stream and questions are made of.

A :class:`TaskSource` turns a seeded RNG into a :class:`TaskInstance`: a stream of items (dialogue
turns, document chunks, synthetic facts) and questions whose gold answers and evidence point into
that stream. Stream envs (memory manager, Mem-α, MemAgent) take any registered source by name,
so the same env runs on LoCoMo, HotpotQA, SQuAD v2 or a synthetic generator whose optimal op
sequence is known.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from memgym.errors import ConfigError


@dataclass(frozen=True)
class StreamItem:
    """One item of the stream an agent reads.

    Attributes:
        id: Stable id within the instance (e.g. LoCoMo ``"D1:3"``, ``"p4"``); questions cite it
            as evidence.
        text: The item's content.
        date: Timestamp or session date, empty if the source has none.
        speaker: Who said it (dialogue) or the document title, empty if none.
    """

    id: str
    text: str
    date: str = ""
    speaker: str = ""


@dataclass(frozen=True)
class QAItem:
    """A question about the stream.

    Attributes:
        question: The question text.
        answers: Gold answers; a prediction is scored against the best-matching one.
        evidence: Ids of the stream items that hold the answer (empty: unanswerable).
        category: The source's question type, for per-category scores (LoCoMo:
            ``"single-hop"``, ``"multi-hop"``, ``"temporal"``, ``"open-domain"``,
            ``"adversarial"``); empty if the source has none.
    """

    question: str
    answers: tuple[str, ...]
    evidence: tuple[str, ...] = ()
    category: str = ""


@dataclass(frozen=True)
class TaskInstance:
    """One episode's data: the stream and the questions asked after (or about) it.

    Attributes:
        id: Identifies the instance within its source (e.g. ``"conv-30:120"``, ``"kv:seed"``).
        items: The stream, in reading order.
        questions: Questions with gold answers and evidence ids into ``items``.
    """

    id: str
    items: tuple[StreamItem, ...]
    questions: tuple[QAItem, ...]


class TaskSource(Protocol):
    """Draws task instances. ``num_instances`` is None for unbounded (generated) sources.

    ``sample`` must be a pure function of the RNG state, so env determinism and replay follow
    from the seed.
    """

    name: str
    num_instances: int | None

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """A fresh instance drawn with ``rng``."""
        ...

    def instance(self, index: int) -> TaskInstance:
        """Instance ``index`` of a finite source.

        Raises:
            ConfigError: The source is unbounded or ``index`` is out of range.
        """
        ...


def pick_instance(source: TaskSource, rng: np.random.Generator,
                  options: dict[str, Any] | None) -> TaskInstance:
    """The instance of an episode: ``source.instance(options["episode"])`` when reset's
    ``options`` name an episode, else a fresh ``source.sample(rng)``.

    Raises:
        ConfigError: The episode index is out of range or the source is unbounded.
    """
    index = (options or {}).get("episode")
    return source.sample(rng) if index is None else source.instance(index)


SOURCES: dict[str, Callable[..., TaskSource]] = {}


def register_source(name: str, factory: Callable[..., TaskSource]) -> None:
    """Make ``factory`` available to envs as ``source=name``."""
    SOURCES[name] = factory


def make_source(source: str | TaskSource, split: str, **kwargs) -> TaskSource:
    """Build a registered source by name (or pass a ready source through).

    Args:
        source: A name in :data:`SOURCES` or a :class:`TaskSource`.
        split: ``train`` / ``val`` / ``test``; forwarded to the factory.
        **kwargs: Source-specific options (e.g. ``window`` for LoCoMo, ``num_keys`` for KV).

    Raises:
        ConfigError: Unknown source name, or options the source does not take.
    """
    if not isinstance(source, str):
        return source
    import memgym.envs  # noqa: F401  (registers the built-in sources)

    if source not in SOURCES:
        raise ConfigError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    try:
        inspect.signature(SOURCES[source]).bind(split=split, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"source {source!r} does not take these options: {exc}") from exc
    return SOURCES[source](split=split, **kwargs)


def split_range(n: int, split: str) -> range:
    """Indices of ``split`` among ``n`` ordered records: train 70%, val 10%, test 20%.

    Raises:
        ConfigError: Unknown split.
    """
    cuts = {"train": (0.0, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0)}
    if split not in cuts:
        raise ConfigError(f"split must be one of {sorted(cuts)}, got {split!r}")
    lo, hi = cuts[split]
    return range(round(lo * n), round(hi * n))


class FiniteSource:
    """Base for sources backed by a fixed list of instances (sampled uniformly)."""

    name = "finite"

    def __init__(self, instances: list[TaskInstance]) -> None:
        if not instances:
            raise ConfigError(f"source {self.name!r} has no instances for these options")
        self._instances = instances
        self.num_instances: int | None = len(instances)

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """See :class:`TaskSource`."""
        return self._instances[int(rng.integers(len(self._instances)))]

    def instance(self, index: int) -> TaskInstance:
        """See :class:`TaskSource`."""
        if not 0 <= index < len(self._instances):
            raise ConfigError(f"instance index must be in [0, {len(self._instances)}), "
                              f"got {index}")
        return self._instances[index]


class UnboundedSource:
    """Base for generated sources (``num_instances`` is None): :meth:`sample` is the only way to
    draw an instance; subclasses define it."""

    name = "unbounded"
    num_instances: int | None = None

    def instance(self, index: int) -> TaskInstance:
        """Always raises: the source is unbounded (draw with :meth:`TaskSource.sample`).

        Raises:
            ConfigError: Always.
        """
        raise ConfigError(f"source {self.name!r} is unbounded (num_instances=None): "
                          f"sample it with a seed (reset(seed=...)) instead of asking for instance "
                          f"{index}")
