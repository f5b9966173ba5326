"""Memory metrics computed from recorded trajectories (no env needed).

Inputs, per step: the parsed ops (``Step.ops``), their results (``Step.op_results``: ``applied``
and the entry ``id`` an op created or touched), the parse error, and -- where the env records
them -- question-answering records in ``Step.info["qa"]``: one dict per question answered after
that step's ops, with ``retrieved`` (entry ids the answer agent read, best first) and
``supporting`` (the retrieved ids whose text answers the question, token F1 > 0 against a gold
answer; see :class:`memgym.envs.answerers.Answered`). A *read* is one retrieved id of one qa
record, at the step ``T`` of that record.

The bank is reconstructed from the applied ``add`` / ``update`` / ``delete`` results: an add
creates entry ``id`` at step ``s`` (created = updated = ``s``), an update sets its updated step,
a delete removes it; an applied ``rate`` with an id (-v3 of the LoCoMo manager: the rated turn
was stored) is an add of a new id or an update of a held one. This is exact for
:class:`memgym.memory.MemoryBank` envs (ids are never reused); other op kinds count in the op
mix only.

Columns of :func:`summarize` (one row per trajectory):

* ``trajectory_id``, ``env_id``, ``policy``, ``episode_return``, ``steps``.
* ``ops_per_step``: parsed ops / steps.
* ``op_<kind>`` for ``add``, ``update``, ``delete``, ``noop`` and any other kind present:
  ops of that kind / parsed ops (NaN when no op parsed).
* ``parse_error_rate``: steps whose action did not parse / steps.
* ``rejected_op_rate``: op results not applied / op results (NaN without ops).
* ``bank_size_mean`` / ``bank_size_final``: reconstructed bank size after each step, averaged
  over steps / after the last step.
* ``reads``: retrieved ids over all qa records (with repeats).
* ``read_age_mean``: mean over reads of ``T - created step`` of the entry read (steps).
* ``read_staleness_mean``: mean over reads of ``T - last updated step`` of the entry read.
* ``writes``: applied ``add`` and ``update`` ops.
* ``write_read_hit_rate``: entries created by an applied add whose id is among the
  ``supporting`` ids of a qa record at a step >= its creation / entries created.
* ``wasted_writes``: applied writes whose text was never read: no qa record retrieved the entry
  while this write's text was in it, i.e. at a step ``T`` with ``s <= T < s'``, where ``s`` is
  the write's step and ``s'`` the step of the next write or delete of that entry (the end of the
  episode if none). ``wasted_write_rate`` = wasted writes / writes.

The read metrics are NaN for a trajectory without qa records (e.g. schema-1 files, which did
not record ``info``); the rates are NaN when their denominator is 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from memgym.errors import ConfigError
from memgym.trajectory import Trajectory, trajectories_from_frame

OP_KINDS = ("add", "update", "delete", "noop")
TRAINING_COLUMNS = ("bank_size_final", "read_age_mean", "read_staleness_mean",
                    "write_read_hit_rate", "wasted_write_rate", "rejected_op_rate")


@dataclass
class _Write:
    step: int
    read: bool = False


@dataclass
class _Bank:
    """Live entries (id -> [created step, updated step]) and the writes into them."""

    entries: dict[str, list[int]] = field(default_factory=dict)
    writes: list[_Write] = field(default_factory=list)
    visible: dict[str, _Write] = field(default_factory=dict)  # id -> write whose text it holds

    def apply(self, kind: str, entry: str, step: int) -> None:
        """Apply one applied add/update/delete result."""
        if kind == "delete":
            self.entries.pop(entry, None)
            self.visible.pop(entry, None)
            return
        if kind == "add":
            self.entries[entry] = [step, step]
        elif entry in self.entries:
            self.entries[entry][1] = step
        self.visible[entry] = _Write(step)
        self.writes.append(self.visible[entry])


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def trajectory_metrics(traj: Trajectory) -> dict:
    """The metrics of one trajectory (see the module docstring for each column).

    Returns:
        A dict of column name -> value (float, int or str).
    """
    kinds: Counter[str] = Counter()
    bank = _Bank()
    sizes, ages, staleness = [], [], []
    created: dict[str, int] = {}
    hit: set[str] = set()
    rejected = results = parse_errors = reads = 0
    has_qa = False
    for step in traj.steps:
        parse_errors += step.parse_error is not None
        kinds.update(op["kind"] for op in step.ops)
        for result in step.op_results:
            kind = result["op"]["kind"]
            results += 1
            rejected += not result["applied"]
            if kind == "rate" and result["applied"] and result["id"]:  # -v3 stored the turn
                kind = "update" if str(result["id"]) in bank.entries else "add"
            if result["applied"] and kind in ("add", "update", "delete") and result["id"]:
                bank.apply(kind, str(result["id"]), step.index)
                if kind == "add":
                    created[str(result["id"])] = step.index
        sizes.append(len(bank.entries))
        for record in (step.info or {}).get("qa", []):
            has_qa = True
            for entry in record.get("retrieved", []):
                reads += 1
                if entry in bank.entries:
                    ages.append(step.index - bank.entries[entry][0])
                    staleness.append(step.index - bank.entries[entry][1])
                if entry in bank.visible:
                    bank.visible[entry].read = True
            hit.update(e for e in record.get("supporting", []) if e in created)
    n_ops = sum(kinds.values())
    writes = len(bank.writes)
    nan = math.nan
    row = {
        "trajectory_id": traj.id, "env_id": traj.env_id, "policy": traj.policy,
        "episode_return": traj.episode_return, "steps": len(traj.steps),
        "ops_per_step": _ratio(n_ops, len(traj.steps)),
        **{f"op_{k}": _ratio(kinds.get(k, 0), n_ops) for k in (*OP_KINDS, *sorted(
            set(kinds) - set(OP_KINDS)))},
        "parse_error_rate": _ratio(parse_errors, len(traj.steps)),
        "rejected_op_rate": _ratio(rejected, results),
        "bank_size_mean": float(np.mean(sizes)) if sizes else nan,
        "bank_size_final": sizes[-1] if sizes else 0,
        "reads": reads if has_qa else nan,
        "read_age_mean": float(np.mean(ages)) if ages else nan,
        "read_staleness_mean": float(np.mean(staleness)) if staleness else nan,
        "writes": writes,
        "write_read_hit_rate": _ratio(len(hit), len(created)) if has_qa else nan,
        "wasted_writes": sum(not w.read for w in bank.writes) if has_qa else nan,
    }
    row["wasted_write_rate"] = _ratio(row["wasted_writes"], writes) if has_qa else nan
    return row


def summarize(data: pd.DataFrame | Sequence[Trajectory], by: str = "trajectory") -> pd.DataFrame:
    """Memory metrics of trajectories.

    Args:
        data: A :func:`memgym.load_trajectories` frame or :class:`Trajectory` objects.
        by: ``"trajectory"``: one row per trajectory, columns as in the module docstring.
            ``"policy"``: one row per (``env_id``, ``policy``): the mean over its trajectories
            of every numeric column (NaN skipped; each trajectory weighs the same) and
            ``trajectories``, their count.

    Returns:
        The metrics table.

    Raises:
        ConfigError: ``by`` is neither ``"trajectory"`` nor ``"policy"``.
        SchemaError: The frame's rows are inconsistent.
    """
    if by not in ("trajectory", "policy"):
        raise ConfigError(f"by must be 'trajectory' or 'policy', got {by!r}")
    trajectories = trajectories_from_frame(data) if isinstance(data, pd.DataFrame) else data
    table = pd.DataFrame([trajectory_metrics(t) for t in trajectories])
    if by == "trajectory" or table.empty:
        return table
    numeric = table.drop(columns=["trajectory_id"]).groupby(["env_id", "policy"], sort=False)
    out = numeric.mean(numeric_only=True)
    out.insert(0, "trajectories", numeric.size())
    return out.reset_index()


def training_row(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """What the trainer logs per iteration: op mix and :data:`TRAINING_COLUMNS`, each the mean
    over ``trajectories`` (NaN skipped), as ``op_<kind>`` and ``mem_<column>``."""
    table = pd.DataFrame([trajectory_metrics(t) for t in trajectories])
    row = {f"op_{k}": float(table[f"op_{k}"].mean()) for k in OP_KINDS}
    row.update({f"mem_{c}": float(table[c].mean()) for c in TRAINING_COLUMNS})
    return row


def rollout_diagnostics(trajectories: Sequence[Trajectory], max_new_tokens: int,
                        eos_token_id: int | None) -> dict[str, float]:
    """Per-iteration checks of the rollout→training contract (logged as ``rollout_*``).

    Args:
        trajectories: One iteration's rollouts.
        max_new_tokens: The sampling limit on completion tokens.
        eos_token_id: The tokenizer's EOS id (a completion ending with it was not cut).

    Returns:
        ``rollout_segments_per_trajectory`` (mean token segments per trajectory),
        ``rollout_prefix_breaks`` (segments cut because a prompt did not extend the previous
        prompt + completion: with chat-native envs and a :class:`~memgym.rollouts.chat.
        ChatRenderer` engine this stays 0), ``rollout_truncated_rate`` (completions cut at
        ``max_new_tokens`` without EOS / completions; their loss tokens are kept), each NaN
        when there is nothing to count.
    """
    segments = [s for t in trajectories for s in t.segments]
    completions = [s.completion_ids for t in trajectories for s in t.steps if s.completion_ids]
    cut = sum(len(ids) >= max_new_tokens and ids[-1] != eos_token_id for ids in completions)
    return {
        "rollout_segments_per_trajectory": (len(segments) / len(trajectories)
                                            if trajectories else float("nan")),
        "rollout_prefix_breaks": float(sum(s.end_reason == "prefix_break" for s in segments)),
        "rollout_truncated_rate": cut / len(completions) if completions else float("nan")}
