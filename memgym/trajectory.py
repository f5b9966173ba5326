"""Steps, segments and trajectories, and their Parquet form (one row per segment).

A *segment* is a contiguous run of steps whose prompts share a growing prefix; it is trained as
one prompt+completion sample (DCPO, MemAct). The env declares where a segment ends
(``info["segment_end"]``: ``edit`` / ``overwrite`` / ``end``); :func:`build_segments` also cuts
where the next prompt does not extend the previous prompt+completion (``prefix_break``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from memgym.errors import SchemaError

SCHEMA_VERSION = 1
SEGMENT_END_REASONS = ("edit", "overwrite", "end", "prefix_break")


def config_hash(config: dict) -> str:
    """sha256 (first 16 hex chars) of the canonical JSON of an env config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Step:
    """One env step as the policy saw and did it.

    Attributes:
        index: 0-based step number in the episode.
        observation: Text the policy acted on.
        action: Raw text the policy emitted.
        ops: Parsed ops as dicts (``memgym.ops.op_to_dict``); empty on a parse error.
        op_results: ``OpResult.to_dict()`` of each op.
        parse_error: ``ParseError.to_dict()`` or None.
        reward: Scalar reward of this step.
        reward_terms: Named terms that sum to ``reward``.
        terminated / truncated: Gymnasium episode-end flags after this step.
        segment_end: Why a segment ends after this step, or None.
        prompt_ids / completion_ids: Token ids (int) of the policy's prompt and completion;
            empty for scripted policies.
        logprobs: Sampling logprob (float, nats) of each completion token.
    """

    index: int
    observation: str
    action: str
    ops: list[dict] = field(default_factory=list)
    op_results: list[dict] = field(default_factory=list)
    parse_error: dict | None = None
    reward: float = 0.0
    reward_terms: dict[str, float] = field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    segment_end: str | None = None
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class Segment:
    """One training sample cut from a trajectory.

    Attributes:
        index: 0-based segment number in the trajectory.
        step_start / step_end: Steps ``[step_start, step_end)`` it covers.
        prompt_ids: Prompt token ids (int), length P.
        completion_ids: Completion token ids (int), length C: the policy's tokens plus any env
            tokens inserted between steps of the segment.
        loss_mask: Length C, 1 where the policy produced the token, 0 for env tokens.
        logprobs: Length C, sampling logprobs (0.0 where ``loss_mask`` is 0).
        end_reason: One of :data:`SEGMENT_END_REASONS`.
    """

    index: int
    step_start: int
    step_end: int
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    end_reason: str


@dataclass
class Trajectory:
    """One episode: its steps, their segments and where they came from.

    Attributes:
        env_id: Registered id, e.g. ``memgym/LoCoMoMemoryManager-v0``.
        seed: Seed passed to ``reset``.
        config: Keyword arguments of ``gymnasium.make`` (JSON-serializable).
        policy: Name of the policy that acted.
        steps: The steps, in order.
        final_observation: Observation returned by the last step.
        id: Unique id (hex).
        group: Id of the group (same seed) for group-relative advantages.
        segments: Filled by :func:`build_segments` when the policy produced token ids.
    """

    env_id: str
    seed: int
    config: dict
    policy: str
    steps: list[Step]
    final_observation: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    group: int = 0
    segments: list[Segment] = field(default_factory=list)

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of step rewards."""
        return float(sum(s.reward for s in self.steps))

    @property
    def reward_terms(self) -> dict[str, float]:
        """Each reward term summed over the episode."""
        totals: dict[str, float] = {}
        for step in self.steps:
            for name, value in step.reward_terms.items():
                totals[name] = totals.get(name, 0.0) + value
        return totals


def _extends(prefix: list[int], ids: list[int]) -> bool:
    return len(ids) >= len(prefix) and ids[: len(prefix)] == prefix


def build_segments(steps: list[Step]) -> list[Segment]:
    """Cut steps into segments (DCPO): a segment closes at a declared ``segment_end`` or where
    the next prompt does not start with the previous prompt + completion.

    Within a segment the tokens the env inserted between two completions are appended to the
    completion with ``loss_mask`` 0. A trajectory whose steps all extend one prefix gives one
    segment, identical to the unsegmented sample.

    Args:
        steps: Steps with token ids.

    Returns:
        Segments covering all steps in order; the last one ends with ``"end"`` unless the env
        declared another reason.
    """
    segments: list[Segment] = []
    current: Segment | None = None
    for step in steps:
        if current is not None:
            context = current.prompt_ids + current.completion_ids
            if _extends(context, step.prompt_ids):
                inserted = step.prompt_ids[len(context):]
                current.completion_ids += inserted + step.completion_ids
                current.loss_mask += [0] * len(inserted) + [1] * len(step.completion_ids)
                current.logprobs += [0.0] * len(inserted) + list(step.logprobs)
                current.step_end = step.index + 1
            else:
                current.end_reason = "prefix_break"
                segments.append(current)
                current = None
        if current is None:
            current = Segment(len(segments), step.index, step.index + 1, list(step.prompt_ids),
                              list(step.completion_ids), [1] * len(step.completion_ids),
                              list(step.logprobs), "end")
        if step.segment_end is not None:
            current.end_reason = step.segment_end
            segments.append(current)
            current = None
    if current is not None:
        segments.append(current)
    return segments


def _step_record(step: Step) -> dict:
    return {
        "index": step.index, "observation": step.observation, "action": step.action,
        "ops": json.dumps(step.ops), "op_results": json.dumps(step.op_results),
        "parse_error": json.dumps(step.parse_error), "reward": step.reward,
        "reward_terms": json.dumps(step.reward_terms), "terminated": step.terminated,
        "truncated": step.truncated, "segment_end": step.segment_end or "",
    }


def _rows(traj: Trajectory) -> list[dict]:
    segments = traj.segments or [
        Segment(0, 0, len(traj.steps), [], [], [], [], "end")]  # scripted: no tokens, one row
    common = {
        "trajectory_id": traj.id, "env_id": traj.env_id, "seed": traj.seed,
        "config": json.dumps(traj.config, sort_keys=True), "config_hash": config_hash(traj.config),
        "policy": traj.policy, "group": traj.group, "episode_return": traj.episode_return,
        "reward_terms": json.dumps(traj.reward_terms), "num_steps": len(traj.steps),
        "num_segments": len(segments), "final_observation": traj.final_observation,
    }
    return [{
        **common, "segment_index": seg.index, "step_start": seg.step_start,
        "step_end": seg.step_end, "end_reason": seg.end_reason, "prompt_ids": seg.prompt_ids,
        "completion_ids": seg.completion_ids, "loss_mask": seg.loss_mask,
        "logprobs": seg.logprobs,
        "steps": [_step_record(s) for s in traj.steps[seg.step_start:seg.step_end]],
    } for seg in segments]


_SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("env_id", pa.string()), ("seed", pa.int64()),
    ("config", pa.string()), ("config_hash", pa.string()), ("policy", pa.string()),
    ("group", pa.int64()), ("episode_return", pa.float64()), ("reward_terms", pa.string()),
    ("num_steps", pa.int32()), ("num_segments", pa.int32()), ("final_observation", pa.string()),
    ("segment_index", pa.int32()), ("step_start", pa.int32()), ("step_end", pa.int32()),
    ("end_reason", pa.string()), ("prompt_ids", pa.list_(pa.int32())),
    ("completion_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.int8())),
    ("logprobs", pa.list_(pa.float32())),
    ("steps", pa.list_(pa.struct([
        ("index", pa.int32()), ("observation", pa.string()), ("action", pa.string()),
        ("ops", pa.string()), ("op_results", pa.string()), ("parse_error", pa.string()),
        ("reward", pa.float64()), ("reward_terms", pa.string()), ("terminated", pa.bool_()),
        ("truncated", pa.bool_()), ("segment_end", pa.string())]))),
], metadata={"memgym.schema_version": str(SCHEMA_VERSION)})


def write_trajectories(trajectories: list[Trajectory], path: str | Path) -> Path:
    """Write trajectories to Parquet atomically (temp file + rename), one row per segment.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [row for traj in trajectories for row in _rows(traj)]
    table = pa.Table.from_pylist(rows, schema=_SCHEMA)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def load_trajectories(path: str | Path) -> pd.DataFrame:
    """Read a trajectory file as a DataFrame, one row per segment.

    Raises:
        SchemaError: The file was not written by memgym or has another schema version.
        FileNotFoundError: ``path`` does not exist.
    """
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    version = meta.get(b"memgym.schema_version")
    if version is None:
        raise SchemaError(
            f"{path}: no memgym.schema_version metadata; not a memgym trajectory file")
    if int(version) != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema version {int(version)}, this memgym reads "
                          f"version {SCHEMA_VERSION}")
    missing = set(_SCHEMA.names) - set(table.schema.names)
    if missing:
        raise SchemaError(f"{path}: missing columns {sorted(missing)}")
    return table.to_pandas()


def trajectories_from_frame(frame: pd.DataFrame) -> list[Trajectory]:
    """Rebuild :class:`Trajectory` objects (steps without token ids) from segment rows.

    Raises:
        SchemaError: A trajectory's segment rows do not cover its steps exactly once.
    """
    result = []
    for traj_id, rows in frame.sort_values(["trajectory_id", "segment_index"]).groupby(
            "trajectory_id", sort=False):
        first = rows.iloc[0]
        steps: list[Step] = []
        segments: list[Segment] = []
        for row in rows.itertuples():
            for rec in row.steps:
                steps.append(Step(
                    index=int(rec["index"]), observation=rec["observation"], action=rec["action"],
                    ops=json.loads(rec["ops"]), op_results=json.loads(rec["op_results"]),
                    parse_error=json.loads(rec["parse_error"]), reward=float(rec["reward"]),
                    reward_terms=json.loads(rec["reward_terms"]),
                    terminated=bool(rec["terminated"]), truncated=bool(rec["truncated"]),
                    segment_end=rec["segment_end"] or None))
            segments.append(Segment(
                int(row.segment_index), int(row.step_start), int(row.step_end),
                list(row.prompt_ids), list(row.completion_ids), list(row.loss_mask),
                list(row.logprobs), row.end_reason))
        if [s.index for s in steps] != list(range(int(first.num_steps))):
            raise SchemaError(f"trajectory {traj_id}: rows hold steps {[s.index for s in steps]},"
                              f" expected 0..{int(first.num_steps) - 1}")
        result.append(Trajectory(
            env_id=first.env_id, seed=int(first.seed), config=json.loads(first.config),
            policy=first.policy, steps=steps, final_observation=first.final_observation,
            id=traj_id, group=int(first.group),
            segments=[s for s in segments if s.prompt_ids or s.completion_ids]))
    return result
