"""bAbI-like entity/location state tracking with moves and swaps (a synthetic
:class:`TaskSource`), after the bAbI "where is" tasks (Weston et al., 2015).

The stream narrates people moving between locations ("Mary went to the kitchen.") and swapping
places ("Mary and John swapped places."); the questions ask where someone is at the end
("Where is Mary?").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from memgym.envs.sources import QAItem, StreamItem, TaskInstance, UnboundedSource
from memgym.envs.synthetic.vocab import split_names
from memgym.errors import ConfigError

LOCATIONS = ("kitchen", "garden", "hallway", "bathroom", "bedroom", "office", "cellar", "attic",
             "library", "garage", "balcony", "pantry")
"""Single-token locations; an instance uses the first ``num_locations``."""

VERBS = ("went", "moved", "journeyed", "travelled")
"""Move verbs (bAbI's); drawn uniformly per move, they do not change its meaning."""

_MOVE = re.compile(rf"^(\w+) (?:{'|'.join(VERBS)}) to the (\w+)\.$")
_SWAP = re.compile(r"^(\w+) and (\w+) swapped places\.$")


@dataclass(frozen=True)
class Move:
    """``entity`` is now at ``location``."""

    entity: str
    location: str


@dataclass(frozen=True)
class Swap:
    """``first`` and ``second`` exchanged locations."""

    first: str
    second: str


def parse_event(text: str) -> Move | Swap | None:
    """The event a stream text of :class:`BabiSource` states, else None."""
    if match := _MOVE.match(text.strip()):
        return Move(match[1], match[2])
    if match := _SWAP.match(text.strip()):
        return Swap(match[1], match[2])
    return None


class BabiSource(UnboundedSource):
    """Unbounded bAbI-like location-tracking streams (``num_instances = None``).

    An instance has ``num_entities`` people and a stream of ``num_events`` events
    ``e0, e1, ...``: the first ``num_entities`` place each person (in random order) with a
    move; each later event is, with probability ``swap_prob``, a swap of two people at different
    locations, otherwise a move of a uniformly drawn person to a location other than theirs.
    Questions ask where ``num_questions`` distinct people are after the last event. A question's
    evidence is the chain of events that determines the answer, in stream order: the person's
    last move if nothing swapped them since, else (recursively) the evidence of the partner's
    location before their last swap, then that swap.

    Args:
        split: ``train`` / ``val`` / ``test``; people come from disjoint name lists
            (:func:`memgym.envs.synthetic.vocab.split_names`: 42 / 6 / 12 names).
        num_entities: People per instance (2 .. names of the split).
        num_events: Events in the stream (>= ``num_entities``).
        swap_prob: Probability in [0, 1] that an event after the placements is a swap.
        num_locations: Locations in use (2 .. 12).
        num_questions: People asked about (1 .. ``num_entities``), distinct.

    Raises:
        ConfigError: A knob is out of range, or the split is unknown.
    """

    name = "synthetic-babi"

    def __init__(self, split: str = "train", num_entities: int = 4, num_events: int = 16,
                 swap_prob: float = 0.25, num_locations: int = 6, num_questions: int = 2) -> None:
        self.split = split
        self.names = split_names(split)
        if not 2 <= num_entities <= len(self.names):
            raise ConfigError(f"num_entities must be in [2, {len(self.names)}] for split "
                              f"{split!r}, got {num_entities}")
        if num_events < num_entities:
            raise ConfigError(f"num_events must be >= num_entities={num_entities}, "
                              f"got {num_events}")
        if not 0.0 <= swap_prob <= 1.0:
            raise ConfigError(f"swap_prob must be in [0, 1], got {swap_prob}")
        if not 2 <= num_locations <= len(LOCATIONS):
            raise ConfigError(f"num_locations must be in [2, {len(LOCATIONS)}], "
                              f"got {num_locations}")
        if not 1 <= num_questions <= num_entities:
            raise ConfigError(f"num_questions must be in [1, num_entities={num_entities}], "
                              f"got {num_questions}")
        self.num_entities, self.num_events, self.swap_prob = num_entities, num_events, swap_prob
        self.num_locations, self.num_questions = num_locations, num_questions

    def sample(self, rng: np.random.Generator) -> TaskInstance:
        """A fresh instance; a pure function of ``rng``'s state (see :class:`TaskSource`)."""
        nonce = int(rng.integers(2**32))
        people = [self.names[i] for i in rng.choice(len(self.names), size=self.num_entities,
                                                    replace=False)]
        where: dict[str, str] = {}
        evidence: dict[str, tuple[str, ...]] = {}
        items = []

        def move(who: str) -> None:
            location = LOCATIONS[int(rng.integers(self.num_locations))]
            while location == where.get(who):
                location = LOCATIONS[int(rng.integers(self.num_locations))]
            verb = VERBS[int(rng.integers(len(VERBS)))]
            items.append(StreamItem(f"e{len(items)}", f"{who} {verb} to the {location}."))
            where[who], evidence[who] = location, (items[-1].id,)

        for i in rng.permutation(self.num_entities):
            move(people[int(i)])
        while len(items) < self.num_events:
            pairs = [(a, b) for a in people for b in people if a < b and where[a] != where[b]]
            if pairs and rng.random() < self.swap_prob:
                a, b = pairs[int(rng.integers(len(pairs)))]
                if rng.random() < 0.5:
                    a, b = b, a
                items.append(StreamItem(f"e{len(items)}", f"{a} and {b} swapped places."))
                where[a], where[b] = where[b], where[a]
                evidence[a], evidence[b] = (evidence[b] + (items[-1].id,),
                                            evidence[a] + (items[-1].id,))
            else:
                move(people[int(rng.integers(self.num_entities))])
        asked = [people[int(i)] for i in rng.choice(self.num_entities, size=self.num_questions,
                                                    replace=False)]
        questions = tuple(QAItem(f"Where is {who}?", (where[who],), evidence[who])
                          for who in asked)
        return TaskInstance(f"{self.name}:{self.split}:{nonce:08x}", tuple(items), questions)
