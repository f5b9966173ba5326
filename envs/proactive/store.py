"""The experience store of ``memgym/ProactiveRetrieval``: typed repositories of past experience.

ProactRL ("Ask Only When Needed: Proactive Retrieval from Memory and Skills for
Experience-Driven Lifelong Agents") retrieves from typed memory: factual knowledge, past
episodes (earlier tasks and their outcomes) and skills (reusable procedures). Here each
repository is a :class:`~memgym.memory.MemoryBank` (BM25 search, exact snapshots) whose entries
carry their item id as provenance, and every item is shown as one line ``[<id>] <text>``:

* ``facts``: the stream's facts as they are read, ids ``f<i>`` (stream position);
* ``episodes``: one record per ended task of the lifelong stream, ids ``e<j>`` (task number,
  1-based), written by the env: the question, the correct answer and the answer given with its
  outcome (:func:`episode_text`);
* ``skills``: :data:`SKILLS`, fixed procedures that derive a quantity from a key's value,
  ids ``s<k>``; a question about a derived quantity needs its skill.

So the store's contents are a pure function of the stream (the seed) and the answers given (the
actions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from memgym.memory import MemoryBank
from memgym.ops import Add

REPOSITORIES = ("facts", "episodes", "skills")
ANSWER_CHARS = 40  # longest answer an episode record quotes (whitespace collapsed)


@dataclass(frozen=True)
class Skill:
    """A procedure that derives a quantity from the value of a person's attribute.

    Attributes:
        name: The derived quantity, as questions name it (``"floor"``).
        attribute: The :data:`~memgym.envs.synthetic.kv.ATTRIBUTES` key it reads (``"room"``).
        text: The procedure in words, the skill repository's entry.
        apply: The procedure: attribute value -> derived value (``"347"`` -> ``"3"``).
    """

    name: str
    attribute: str
    text: str
    apply: Callable[[str], str]


SKILLS: dict[str, Skill] = {s.name: s for s in (
    Skill("door code", "PIN", "a person's door code is the last two digits of their PIN.",
          lambda v: v[-2:]),
    Skill("floor", "room", "a person's floor is the first digit of their room number.",
          lambda v: v[0]),
    Skill("city code", "hometown", "a person's city code is the first three letters of their "
          "hometown, in capitals.", lambda v: v[:3].upper()),
    Skill("car tag", "car", "a person's car tag is the first two letters of their car's make, "
          "in capitals.", lambda v: v[:2].upper()),
    Skill("club", "hobby", "a person's club is their hobby followed by the word club.",
          lambda v: f"{v} club"),
)}
"""Derived quantity -> :class:`Skill`, one per attribute; skill ``s<k>`` is the k-th (1-based)."""

SKILL_IDS = {name: f"s{k}" for k, name in enumerate(SKILLS, 1)}
SKILL_LINE = re.compile(r"^\[s\d+\] Skill (.+?): ", re.MULTILINE)
EPISODE_LINE = re.compile(r"^\[e(\d+)\] Task \d+ asked: .*? Correct answer: (.+?)\. Answer given:",
                          re.MULTILINE)


def skill_text(skill: Skill) -> str:
    """The skill repository's entry: ``"Skill floor: a person's floor is ..."``."""
    return f"Skill {skill.name}: {skill.text}"


def episode_text(number: int, question: str, answer: str, prediction: str | None,
                 success: bool) -> str:
    """The record of ended task ``number`` (1-based) for the episodes repository.

    ``"Task 2 asked: What is Alice's PIN? Correct answer: 7310. Answer given: 1234 (wrong)."``;
    the answer given is quoted with whitespace collapsed and cut to :data:`ANSWER_CHARS`
    characters, ``none`` when the task was left unanswered.
    """
    given = " ".join((prediction or "").split())[:ANSWER_CHARS].rstrip() or "none"
    return (f"Task {number} asked: {question} Correct answer: {answer}. Answer given: {given} "
            f"({'correct' if success else 'wrong'}).")


class ExperienceStore:
    """Typed repositories of items ``[<id>] <text>``, each searched by BM25 on its own.

    Args:
        repositories: The names of the repositories, a subset of :data:`REPOSITORIES`; the
            ``skills`` one starts with :data:`SKILLS`, the others empty.
    """

    def __init__(self, repositories: tuple[str, ...] = REPOSITORIES) -> None:
        self.banks = {name: MemoryBank() for name in repositories}
        self.texts: dict[str, str] = {}
        if "skills" in self.banks:
            for name, skill in SKILLS.items():
                self.add("skills", SKILL_IDS[name], skill_text(skill), step=0)

    def add(self, repository: str, item_id: str, text: str, step: int) -> None:
        """Store ``text`` as item ``item_id`` of ``repository`` (``step``: when, for the
        bank's record)."""
        self.banks[repository].apply(Add(text), step=step, provenance=item_id)
        self.texts[item_id] = text

    def search(self, repository: str, query: str, k: int) -> list[str]:
        """Ids of the top ``k`` items of ``repository`` for ``query``, best first
        (:meth:`~memgym.memory.MemoryBank.search`: only items sharing a term with it)."""
        return [entry.provenance for entry, _ in self.banks[repository].search(query, k)]

    def line(self, item_id: str) -> str:
        """``[<id>] <text>`` of a stored item."""
        return f"[{item_id}] {self.texts[item_id]}"
