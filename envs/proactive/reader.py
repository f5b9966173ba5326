"""The context reader of ``memgym/ProactiveRetrieval-v0``: answer a task from what is in context.

It reads only the observation (no gold data): the question line and every fact line
``[f<i>] <fact>`` (context and retrieved alike), and answers with the value of the asked key's
most recent fact (highest stream position ``i``). It is the env's fixed continuation policy for
paired-branch process rewards and the answering step of every scripted baseline but the oracle.
"""

from __future__ import annotations

import re

from memgym.envs.synthetic import parse_fact

QUESTION = re.compile(r"^Question: What is (.+)\?$", re.MULTILINE)
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


def answer_from_context(observation: str) -> str:
    """The value of the asked key's most recent fact in ``observation``, ``""`` if none."""
    values = known_values(observation, asked_key(observation))
    return values[-1][1] if values else ""
