"""The context reader of ``memgym/ProactiveRetrieval-v0``: answer a task from what is in context.

It reads only the observation (no gold data): the question line and every item line, context
and retrieved alike. A fact question (``What is Alice's PIN?``) gets the value of the asked
key's most recent fact (highest stream position ``i`` of the lines ``[f<i>] <fact>``). With the
typed store (``-v2``) also: a question about a derived quantity (``What is Alice's floor?``)
gets the procedure of its skill line (``[s<k>] Skill floor: ...``, executed by its
:class:`~memgym.envs.proactive.store.Skill`) applied to the key's most recent fact, ``""``
without the skill line; a recall question (``What was the correct answer to task 2, which
asked: ...``) gets the correct answer of task 2's episode record (``[e2] ...``), and without
it the answer to the question it quotes (what the context says now). It is the env's fixed
continuation policy for paired-branch process rewards and the answering step of every scripted
baseline but the oracle.
"""

from __future__ import annotations

import re

from memgym.envs.proactive.store import EPISODE_LINE, SKILL_LINE, SKILLS
from memgym.envs.synthetic import parse_fact

QUESTION = re.compile(r"^Question: What is (.+)\?$", re.MULTILINE)
RECALL = re.compile(r"^Question: What was the correct answer to task (\d+), which asked: (.+)$",
                    re.MULTILINE)
FACT_LINE = re.compile(r"^\[f(\d+)\] (.+)$", re.MULTILINE)


def asked_key(observation: str) -> str:
    """The key a task asks (``"Alice's PIN"``), or ``""`` when the observation shows none."""
    match = QUESTION.search(observation)
    return match.group(1) if match else ""


def known_values(observation: str, key: str) -> list[tuple[int, str]]:
    """``(stream position, value)`` of every fact about ``key`` shown in ``observation``, in
    ascending position (duplicates, e.g. a retrieved fact already in context, kept once)."""
    found = set()
    for match in FACT_LINE.finditer(observation):
        fact = parse_fact(match.group(2))
        if fact is not None and fact[0] == key:
            found.add((int(match.group(1)), fact[1]))
    return sorted(found)


def _answer_key(observation: str, key: str) -> str:
    values = known_values(observation, key)
    if values:
        return values[-1][1]
    owner, _, quantity = key.partition("'s ")
    if quantity in set(SKILL_LINE.findall(observation)) and quantity in SKILLS:
        skill = SKILLS[quantity]
        values = known_values(observation, f"{owner}'s {skill.attribute}")
        return skill.apply(values[-1][1]) if values else ""
    return ""


def answer_from_context(observation: str) -> str:
    """The answer the observation supports (see the module docs), ``""`` if none."""
    recall = RECALL.search(observation)
    if recall is None:
        return _answer_key(observation, asked_key(observation))
    for number, answer in EPISODE_LINE.findall(observation):
        if number == recall.group(1):
            return answer
    quoted = QUESTION.search(f"Question: {recall.group(2)}")
    return _answer_key(observation, quoted.group(1)) if quoted else ""
