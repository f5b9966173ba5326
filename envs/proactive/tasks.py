"""The task stream of ``memgym/ProactiveRetrieval-v0``: questions posed along a key-value stream.

A stream of the ``synthetic-kv`` generator (:class:`~memgym.envs.synthetic.KeyValueSource`:
facts with repeated updates, ``"Alice's PIN is now 7310."``) is read item by item into the
agent's memory bank; at ``num_tasks`` evenly spaced points a task asks the current value of a
key stated so far. The agent's context at a task holds a few earlier facts: the key's latest
fact (the evidence) with probability ``p_in_context``; otherwise, with probability
``p_stale`` (when the key has one), an older, now stale, fact about the key, which no reader
can tell from the latest without retrieving; the rest are facts about other keys. So whether
retrieval is needed is known to the generator (the oracle reads it), varies per task, and is
not decidable from the context alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memgym.envs.sources import StreamItem
from memgym.envs.synthetic import parse_fact


@dataclass(frozen=True)
class Task:
    """One task of the stream.

    Attributes:
        question: ``"What is <owner>'s <attribute>?"``.
        answer: The key's value after the first ``position`` stream items (the gold answer).
        evidence: Stream id (``"f<i>"``) of the fact holding that value.
        position: Stream items read before the task (the memory bank holds ``f0 .. f<position-1>``).
        context: Stream ids of the facts in the agent's context, in stream order.
        stale: The context holds an older fact of the asked key and not the evidence.
    """

    question: str
    answer: str
    evidence: str
    position: int
    context: tuple[str, ...]
    stale: bool

    @property
    def needs_retrieval(self) -> bool:
        """The evidence is not in the task's initial context."""
        return self.evidence not in self.context


def build_tasks(items: tuple[StreamItem, ...], rng: np.random.Generator, num_tasks: int,
                context_items: int, p_in_context: float, p_stale: float) -> tuple[Task, ...]:
    """The tasks of one episode; a pure function of ``rng``'s state.

    Task ``j`` (0-based) is posed after ``round(len(items) * (j + 1) / num_tasks)`` items; its key
    is drawn uniformly among the keys stated before it, and its context as described in the
    module docs (``context_items`` facts at most, fewer when the stream so far is shorter).

    Args:
        items: The stream, facts written by :func:`~memgym.envs.synthetic.fact_text`.
        rng: The episode's RNG.
        num_tasks: Tasks (>= 1, <= ``len(items)``).
        context_items: Facts in each task's context (>= 1).
        p_in_context: Probability that the context holds the evidence, in [0, 1].
        p_stale: Probability that a context without the evidence holds a stale fact of the
            key (when the key has an older fact), in [0, 1].

    Returns:
        ``num_tasks`` tasks in stream order.
    """
    facts = [(*parse_fact(item.text), item.id) for item in items]  # (key, value, id)
    tasks = []
    for j in range(num_tasks):
        position = round(len(items) * (j + 1) / num_tasks)
        seen = facts[:position]
        keys = sorted({key for key, _, _ in seen})
        key = keys[int(rng.integers(len(keys)))]
        own = [i for i, (k, _, _) in enumerate(seen) if k == key]
        latest, older = own[-1], own[:-1]
        others = [i for i, (k, _, _) in enumerate(seen) if k != key]
        chosen, stale = [], False
        if rng.random() < p_in_context:
            chosen.append(latest)
        elif older and rng.random() < p_stale:
            chosen.append(older[int(rng.integers(len(older)))])
            stale = True
        fill = min(context_items - len(chosen), len(others))
        chosen += [others[int(i)] for i in rng.choice(len(others), size=fill, replace=False)]
        owner, attribute = key.split("'s ")
        tasks.append(Task(f"What is {owner}'s {attribute}?", seen[latest][1], seen[latest][2],
                          position, tuple(seen[i][2] for i in sorted(chosen)), stale))
    return tuple(tasks)
