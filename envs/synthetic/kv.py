"""Key-value facts with repeated updates and interference (a synthetic :class:`TaskSource`).

Each key is a person's attribute ("Alice's PIN"); the stream states and restates keys' values
("Alice's PIN is 4821.", later "Alice's PIN is now 7310.") and the questions ask a key's latest
value ("What is Alice's PIN?"). The optimal memory-manager op sequence is known: ADD at a key's
first fact, UPDATE that key's memory at every later fact (see
:mod:`memgym.envs.synthetic.baselines`).
"""

from __future__ import annotations

import re

import numpy as np

from memgym.envs.sources import QAItem, StreamItem, TaskInstance, UnboundedSource
from memgym.envs.synthetic.vocab import split_names
from memgym.errors import ConfigError

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "PIN": tuple(str(n) for n in range(1000, 10000)),
    "room": tuple(str(n) for n in range(100, 1000)),
    "hometown": (
        "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Oslo", "Dublin",
        "Athens", "Warsaw", "Zurich", "Tokyo", "Seoul", "Lima", "Cairo", "Nairobi", "Toronto",
        "Boston", "Denver", "Chicago", "Sydney", "Munich", "Milan", "Geneva", "Helsinki",
        "Stockholm", "Copenhagen", "Budapest", "Krakow", "Seattle", "Austin"),
    "car": (
        "Toyota", "Honda", "Ford", "Tesla", "Volvo", "BMW", "Audi", "Mazda", "Subaru", "Nissan",
        "Kia", "Hyundai", "Fiat", "Jeep", "Porsche", "Ferrari", "Lexus", "Jaguar", "Peugeot",
        "Renault", "Citroen", "Skoda", "Saab", "Opel", "Dodge", "Chevrolet", "Cadillac", "Buick"),
    "hobby": (
        "chess", "painting", "cycling", "hiking", "fishing", "gardening", "knitting", "pottery",
        "rowing", "climbing", "surfing", "skiing", "baking", "dancing", "juggling", "origami",
        "archery", "fencing", "sailing", "birdwatching", "photography", "woodworking",
        "calligraphy", "karate", "yoga", "swimming", "tennis", "golf"),
}
"""Attribute (one word) → its single-token values. Values of one attribute are pairwise distinct
within an instance at any time, so a fact's value never names another key's current value."""

_FACT = re.compile(r"^(\w+)'s (\w+) is (?:now )?(\w+)\.$")


def fact_text(owner: str, attribute: str, value: str, first: bool) -> str:
    """The stream text of a fact: ``"Alice's PIN is 4821."`` (first) or ``"... is now 4821."``."""
    return f"{owner}'s {attribute} is {'' if first else 'now '}{value}."


def parse_fact(text: str) -> tuple[str, str] | None:
    """``(key, value)`` of a fact written by :func:`fact_text` (``("Alice's PIN", "4821")``),
    else None."""
    match = _FACT.match(text.strip())
    return (f"{match[1]}'s {match[2]}", match[3]) if match else None


class KeyValueSource(UnboundedSource):
    """Unbounded key-value update streams (``num_instances = None``).

    An instance has ``num_keys`` keys (attributes assigned round-robin in a random order, so each
    attribute has at most ``ceil(num_keys / 5)`` keys, each of a distinct owner) and a stream of
    ``num_updates`` facts ``f0, f1, ...``, built as

    1. a shuffled *prefix* that states every key at least once plus
       ``num_updates - num_keys - num_questions - interference`` facts on uniformly drawn keys;
    2. the *last updates* of the ``num_questions`` asked keys: question ``i`` asks the key whose
       last fact is ``f{num_updates - 1 - interference - i}``; each asked key was already
       stated in the prefix, so every question needs an update tracked;
    3. ``interference`` facts on uniformly drawn keys that are never asked.

    So question ``i`` has exactly ``interference + i`` facts about other keys between its key's
    last update and the end of the stream. Every fact gives its key a new value, different from
    the current value of every key of the same attribute. A question's evidence is the id of the
    fact holding the latest value; its gold answer is that value.

    Args:
        split: ``train`` / ``val`` / ``test``; owners come from disjoint name lists
            (:func:`memgym.envs.synthetic.vocab.split_names`: 42 / 6 / 12 names).
        num_keys: Distinct keys per instance (>= ``num_questions``; at most 5 × min(names of
            the split, 27)).
        num_updates: Facts in the stream, first statements included (>= ``num_keys +
            num_questions + interference``).
        interference: Facts about never-asked keys after the last asked key's last update
            (>= 0; > 0 needs ``num_keys > num_questions``).
        num_questions: Keys asked about (>= 1), distinct.

    Raises:
        ConfigError: A knob is out of range, or the split is unknown.
    """

    name = "synthetic-kv"

    def __init__(self, split: str = "train", num_keys: int = 8, num_updates: int = 24,
                 interference: int = 4, num_questions: int = 4) -> None:
        self.split = split
        self.names = split_names(split)
        max_keys = len(ATTRIBUTES) * min(len(self.names),
                                         min(map(len, ATTRIBUTES.values())) - 1)
        if not 1 <= num_questions <= num_keys <= max_keys:
            raise ConfigError(f"expected 1 <= num_questions <= num_keys <= {max_keys} "
                              f"(split {split!r}), got num_questions={num_questions}, "
                              f"num_keys={num_keys}")
        if interference < 0 or (interference > 0 and num_keys == num_questions):
            raise ConfigError(f"interference must be >= 0 and needs num_keys > num_questions "
                              f"when > 0, got interference={interference}, num_keys={num_keys}, "
                              f"num_questions={num_questions}")
        if num_updates < num_keys + num_questions + interference:
            raise ConfigError(f"num_updates must be >= num_keys + num_questions + interference = "
                              f"{num_keys + num_questions + interference}, got {num_updates}")
        self.num_keys, self.num_updates = num_keys, num_updates
        self.interference, self.num_questions = interference, num_questions

    def _keys(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        attributes = [list(ATTRIBUTES)[a] for a in rng.permutation(len(ATTRIBUTES))]
        counts = [len(range(a, self.num_keys, len(attributes))) for a in range(len(attributes))]
        owners = [rng.choice(len(self.names), size=c, replace=False) for c in counts]
        return [(self.names[owners[j % len(attributes)][j // len(attributes)]],
                 attributes[j % len(attributes)]) for j in range(self.num_keys)]

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """A fresh instance; a pure function of ``rng``'s state (see :class:`TaskSource`)."""
        nonce = int(rng.integers(2**32))
        keys = self._keys(rng)
        asked = rng.choice(self.num_keys, size=self.num_questions, replace=False)
        never_asked = np.setdiff1d(np.arange(self.num_keys), asked)
        extra = self.num_updates - self.num_keys - self.num_questions - self.interference
        prefix = rng.permutation(np.concatenate(
            [np.arange(self.num_keys), rng.integers(self.num_keys, size=extra)]))
        tail = rng.choice(never_asked, size=self.interference) if self.interference else []
        order = [int(j) for j in (*prefix, *asked[::-1], *tail)]

        value: dict[int, str] = {}
        last: dict[int, str] = {}
        items = []
        for t, j in enumerate(order):
            owner, attribute = keys[j]
            vocab = ATTRIBUTES[attribute]
            taken = {value[i] for i in value if keys[i][1] == attribute}
            new = vocab[int(rng.integers(len(vocab)))]
            while new in taken:
                new = vocab[int(rng.integers(len(vocab)))]
            items.append(StreamItem(f"f{t}", fact_text(owner, attribute, new, j not in value)))
            value[j], last[j] = new, f"f{t}"
        questions = tuple(QAItem(f"What is {keys[j][0]}'s {keys[j][1]}?", (value[j],),
                                 (last[j],)) for j in map(int, asked))
        return TaskInstance(f"{self.name}:{self.split}:{nonce:08x}", tuple(items), questions)
