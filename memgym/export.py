"""Offline training data from saved trajectories, in TRL's conversational formats.

* **SFT** (:func:`sft_records`): one JSONL record per step of each selected trajectory,
  ``{"messages": [{"role": "user", "content": observation}, {"role": "assistant", "content":
  action}]}`` (TRL's conversational language-modeling format). Steps whose action did not parse
  are left out: they would teach the format errors.
* **DPO** (:func:`dpo_records`): preference pairs ``{"prompt": [user message], "chosen":
  [assistant message], "rejected": [assistant message]}`` (TRL's conversational preference
  format). Trajectories of one *group* -- same env id, config and seed, so the same episode --
  are paired at each step index where their prompts (observations) are identical and their
  actions differ; ``chosen`` is the action of the trajectory with the higher episode return
  (pairs with equal returns are skipped). Each unordered pair of trajectories gives at most one
  record per step.

Selection: ``env_id`` and ``policy`` keep trajectories with exactly that env id / policy name;
``min_return`` keeps SFT trajectories with ``episode_return >= min_return`` and DPO pairs whose
chosen trajectory has it (the rejected side is by design worse).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from itertools import combinations
from pathlib import Path

from memgym.errors import ConfigError
from memgym.trajectory import Step, Trajectory

FORMATS = ("sft", "dpo")


def select(trajectories: Sequence[Trajectory], env_id: str | None = None,
           policy: str | None = None) -> list[Trajectory]:
    """Trajectories matching ``env_id`` and ``policy`` (None: any)."""
    return [t for t in trajectories if (env_id is None or t.env_id == env_id)
            and (policy is None or t.policy == policy)]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def sft_steps(trajectories: Sequence[Trajectory],
              min_return: float | None = None) -> Iterator[Step]:
    """The steps SFT learns from: the parsed steps of trajectories with return >=
    ``min_return`` (None: all), in order."""
    for traj in trajectories:
        if min_return is None or traj.episode_return >= min_return:
            yield from (step for step in traj.steps if step.parse_error is None)


def sft_records(trajectories: Sequence[Trajectory],
                min_return: float | None = None) -> Iterator[dict]:
    """SFT records (see the module docstring) of :func:`sft_steps`."""
    for step in sft_steps(trajectories, min_return):
        yield {"messages": [_user(step.observation), _assistant(step.action)]}


def dpo_records(trajectories: Sequence[Trajectory],
                min_return: float | None = None) -> Iterator[dict]:
    """DPO pairs (see the module docstring), group by group in first-seen order."""
    groups: dict[tuple, list[Trajectory]] = {}
    for traj in trajectories:
        key = (traj.env_id, json.dumps(traj.config, sort_keys=True), traj.seed)
        groups.setdefault(key, []).append(traj)
    for members in groups.values():
        for a, b in combinations(members, 2):
            if a.episode_return == b.episode_return:
                continue
            chosen, rejected = (a, b) if a.episode_return > b.episode_return else (b, a)
            if min_return is not None and chosen.episode_return < min_return:
                continue
            for good, bad in zip(chosen.steps, rejected.steps, strict=False):
                if good.observation == bad.observation and good.action != bad.action:
                    yield {"prompt": [_user(good.observation)], "chosen": [_assistant(good.action)],
                           "rejected": [_assistant(bad.action)]}


def export(trajectories: Sequence[Trajectory], fmt: str, out: str | Path,
           min_return: float | None = None, env_id: str | None = None,
           policy: str | None = None) -> int:
    """Write the selected trajectories as ``fmt`` JSONL to ``out``.

    Returns:
        The number of records written.

    Raises:
        ConfigError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    chosen = select(trajectories, env_id, policy)
    records = (sft_records if fmt == "sft" else dpo_records)(chosen, min_return)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
