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

With the typed experience store (:mod:`memgym.envs.proactive.store`) two more task kinds
(drawn per task with probabilities ``p_skill`` and ``p_recall``; the rest ask facts as above):

* ``skill``: ``"What is Alice's floor?"``, a quantity derived from a key's value by a skill
  (:data:`~memgym.envs.proactive.store.SKILLS`), whose text is never in context: it needs the
  skill and the key's latest fact (in context or not, as above);
* ``recall``: ``"What was the correct answer to task 2, which asked: What is Alice's PIN?"``,
  the answer of an earlier fact or skill task, which only that task's episode record holds (the
  key may have changed since: the context's facts about it, drawn as above, are a trap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memgym.envs.proactive.store import SKILL_IDS, SKILLS
from memgym.envs.sources import StreamItem
from memgym.envs.synthetic import parse_fact

KINDS = ("fact", "skill", "recall")


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
        kind: One of :data:`KINDS`.
        sources: ``(repository, item id, query)`` of every item the answer needs (``evidence``
            among them), with a query that retrieves it (what the oracle searches).
    """

    question: str
    answer: str
    evidence: str
    position: int
    context: tuple[str, ...]
    stale: bool
    kind: str = "fact"
    sources: tuple[tuple[str, str, str], ...] = ()

    @property
    def needs_retrieval(self) -> bool:
        """An item the answer needs is not in the task's initial context."""
        return any(item not in self.context for _, item, _ in self.sources)


def _kind(rng: np.random.Generator, j: int, p_skill: float, p_recall: float) -> str:
    """Task ``j``'s kind (no draw when only facts are asked: the fact-only stream is as before)."""
    if p_skill == p_recall == 0:
        return "fact"
    u = rng.random()
    return "recall" if u < p_recall and j > 0 else "skill" if u < p_recall + p_skill else "fact"


def build_tasks(items: tuple[StreamItem, ...], rng: np.random.Generator, num_tasks: int,
                context_items: int, p_in_context: float, p_stale: float, p_skill: float = 0.0,
                p_recall: float = 0.0) -> tuple[Task, ...]:
    """The tasks of one episode; a pure function of ``rng``'s state.

    Task ``j`` (0-based) is posed after ``round(len(items) * (j + 1) / num_tasks)`` items; its kind
    is drawn first (when ``p_skill`` or ``p_recall`` is positive; task 0 is never ``recall``);
    its key is drawn uniformly among the keys stated before it (a ``recall`` task takes a
    uniformly drawn earlier non-recall task and its key), and its context as described in the
    module docs (``context_items`` facts at most, fewer when the stream so far is shorter).

    Args:
        items: The stream, facts written by :func:`~memgym.envs.synthetic.fact_text`.
        rng: The episode's RNG.
        num_tasks: Tasks (>= 1, <= ``len(items)``).
        context_items: Facts in each task's context (>= 1).
        p_in_context: Probability that the context holds the evidence, in [0, 1].
        p_stale: Probability that a context without the evidence holds a stale fact of the
            key (when the key has an older fact), in [0, 1].
        p_skill: Probability of a ``skill`` task, in [0, 1].
        p_recall: Probability of a ``recall`` task (``p_skill + p_recall <= 1``).

    Returns:
        ``num_tasks`` tasks in stream order.
    """
    facts = [(*parse_fact(item.text), item.id) for item in items]  # (key, value, id)
    tasks: list[Task] = []
    asked: list[str] = []  # each task's key
    for j in range(num_tasks):
        position = round(len(items) * (j + 1) / num_tasks)
        seen = facts[:position]
        kind = _kind(rng, j, p_skill, p_recall)
        earlier = [i for i, t in enumerate(tasks) if t.kind != "recall"]
        if kind == "recall" and not earlier:
            kind = "fact"
        if kind == "recall":
            target = earlier[int(rng.integers(len(earlier)))]
            key = asked[target]
        else:
            keys = sorted({key for key, _, _ in seen})
            key = keys[int(rng.integers(len(keys)))]
        asked.append(key)
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
        context = tuple(seen[i][2] for i in sorted(chosen))
        question, answer, evidence = f"What is {key}?", seen[latest][1], seen[latest][2]
        sources = (("facts", evidence, question),)
        if kind == "skill":
            skill = next(s for s in SKILLS.values() if s.attribute == attribute)
            question, answer = f"What is {owner}'s {skill.name}?", skill.apply(answer)
            sources = (("skills", SKILL_IDS[skill.name], skill.name), ("facts", evidence, key))
        elif kind == "recall":
            old = tasks[target]
            question = (f"What was the correct answer to task {target + 1}, which asked: "
                        f"{old.question}")
            answer, evidence = old.answer, f"e{target + 1}"
            sources = (("episodes", evidence, old.question),)
            stale = False  # the evidence is the record, which a context never holds
        tasks.append(Task(question, answer, evidence, position, context, stale, kind, sources))
    return tuple(tasks)
