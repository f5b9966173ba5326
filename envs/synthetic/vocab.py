"""Word lists shared by the synthetic generators, and the split of their names.

Splits are made disjoint by *vocabulary*: the people (KV owners, bAbI entities) of ``train``,
``val`` and ``test`` come from disjoint slices of :data:`NAMES` (70% / 10% / 20%, via
:func:`memgym.envs.sources.split_range`), so no instance of one split mentions a person of
another. Values and locations are shared: they carry no identity.
"""

from __future__ import annotations

from memgym.envs.sources import split_range

NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack",
    "Karen", "Liam", "Maria", "Nathan", "Olivia", "Peter", "Quinn", "Rachel", "Samuel", "Tara",
    "Umar", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Aaron", "Bella", "Caleb", "Diana",
    "Elias", "Fiona", "Gavin", "Hannah", "Isaac", "Julia", "Kevin", "Laura", "Marcus", "Nora",
    "Oscar", "Paula", "Ruben", "Sofia", "Thomas", "Ursula", "Victor", "Wendy", "Xavier", "Yara",
    "Zachary", "Agnes", "Boris", "Clara", "Dmitri", "Elena", "Felix", "Greta", "Hugo", "Ingrid",
)
"""Single-token first names (60), sliced per split by :func:`split_names`."""


def split_names(split: str) -> tuple[str, ...]:
    """The names reserved for ``split``: train 42, val 6, test 12 of :data:`NAMES`.

    Raises:
        ConfigError: Unknown split.
    """
    return tuple(NAMES[i] for i in split_range(len(NAMES), split))
