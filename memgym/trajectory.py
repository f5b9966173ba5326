"""Steps, segments and trajectories, and their Parquet form (one row per segment).

Schema history (``memgym.schema_version`` in the Parquet metadata): version 1 had no
``parent_id`` / ``parent_step`` columns and no step ``info``; version 2 no ``memory_mask`` and
``policy_version``; :func:`load_trajectories` migrates both (``""`` / ``-1`` / info not recorded
/ memory mask not recorded, ``[]`` / version not recorded, ``-1``). Other versions are refused
with a :class:`SchemaError`.

A *segment* is a contiguous run of steps whose prompts share a growing prefix; it is trained as
one prompt+completion sample (DCPO, MemAct); :func:`memgym.segments.build_segments` cuts them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memgym.codecs.base import CutAction
from memgym.errors import SchemaError
from memgym.surrogates import replace_surrogates

SCHEMA_VERSION = 3
SEGMENT_END_REASONS = ("edit", "overwrite", "end", "prefix_break")
STANDARD_INFO_KEYS = ("ops", "op_results", "parse_error", "reward_terms", "segment_end",
                      "op_spans")
# never saved: gold data for oracles; an append env's chat messages (they follow from its state)
UNRECORDED_INFO_KEYS = ("privileged", "chat")


def _json_default(value):
    return value.tolist() if isinstance(value, np.generic | np.ndarray) else str(value)


_ENCODER = json.JSONEncoder(default=_json_default)


def to_json(value) -> str:
    """JSON text of ``value`` as trajectory files store it (numpy values as Python values, any
    other non-JSON value as its ``str``)."""
    return _ENCODER.encode(value)


def info_extras(info: dict) -> dict:
    """The env-specific part of a step ``info`` that files record: every key but the standard
    ones (stored in their own fields) and ``privileged``, normalized to JSON values."""
    return json.loads(to_json({k: v for k, v in info.items()
                               if k not in STANDARD_INFO_KEYS and k not in UNRECORDED_INFO_KEYS}))


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
        info: Env-specific extras of the ``info`` this step returned (:func:`info_extras`, e.g.
            ``bank_size``, ``qa``); None when not recorded (schema-1 files).
        op_spans: ``[start, end)`` character spans of the memory-op payloads in ``action``
            (``info["op_spans"]``); in memory only (they follow from the action and codec).
        memory_mask: Length ``len(completion_ids)``, 1 on tokens that overlap ``op_spans``
            (memory-token credit; :func:`memgym.rollouts.runner.memory_token_mask`); empty
            when the policy gave no token offsets.
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
    info: dict | None = None
    op_spans: list[list[int]] = field(default_factory=list)
    memory_mask: list[int] = field(default_factory=list)


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
        memory_mask: Length C, 1 on the policy's memory-op payload tokens (the steps'
            ``memory_mask``, 0 on env tokens); empty when a step's mask is not known.
    """

    index: int
    step_start: int
    step_end: int
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    end_reason: str
    memory_mask: list[int] = field(default_factory=list)


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
        segments: Filled by :func:`memgym.segments.build_segments` when the policy produced
            token ids; they may cover only some steps (a fork's replayed prefix has no tokens).
        parent_id: Id of the trajectory this one was forked from ("" if none).
        parent_step: Step of the parent at which the fork's policy took over (-1 if none).
        policy_version: Trainer updates behind the policy that acted (0: the initial weights;
            -1: not recorded).
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
    parent_id: str = ""
    parent_step: int = -1
    policy_version: int = 0

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


def env_action(action: str, info: dict | str | None) -> str:
    """A recorded step's action as the env took it: a :class:`~memgym.codecs.base.CutAction`
    when the step's ``info`` (a dict, or the JSON text files store) recorded ``"cut": true``,
    else ``action``."""
    if isinstance(info, str):
        info = json.loads(info) if '"cut": true' in info else None
    return CutAction(action) if info and info.get("cut") is True else action


def step_record(step: Step) -> dict:
    """A step as trajectory files store it: JSON text for ops, op results, parse error, reward
    terms and info (None: not recorded); ``segment_end`` "" for None. JSON text is ASCII (any
    string survives as its escape); the observation and the action are stored as given, but a
    lone surrogate in them (text that is not valid Unicode, which UTF-8 cannot store: a policy's
    bug, that step's parse error) as U+FFFD, so replay reports that step as diverging."""
    return {
        "index": step.index, "observation": replace_surrogates(step.observation),
        "action": replace_surrogates(step.action),
        "ops": to_json(step.ops), "op_results": to_json(step.op_results),
        "parse_error": to_json(step.parse_error), "reward": step.reward,
        "reward_terms": to_json(step.reward_terms), "terminated": step.terminated,
        "truncated": step.truncated, "segment_end": step.segment_end or "",
        "info": None if step.info is None else to_json(step.info),
    }


def _filler(steps: list[Step], start: int, end: int) -> Segment:
    """A token-less row segment for steps ``[start, end)`` that no token segment covers."""
    reason = (steps[end - 1].segment_end or "prefix_break") if end > start else "end"
    return Segment(0, start, end, [], [], [], [], reason)


def _row_segments(traj: Trajectory) -> list[Segment]:
    """One segment per row: the token segments, plus token-less fillers for the steps they do
    not cover (scripted policies, a fork's replayed prefix), in step order."""
    out, pos = [], 0
    for seg in traj.segments:
        if seg.step_start > pos:
            out.append(_filler(traj.steps, pos, seg.step_start))
        out.append(seg)
        pos = seg.step_end
    if pos < len(traj.steps) or not out:
        out.append(_filler(traj.steps, pos, len(traj.steps)))
    return out


def _rows(traj: Trajectory) -> list[dict]:
    segments = _row_segments(traj)
    common = {
        "trajectory_id": traj.id, "env_id": traj.env_id, "seed": traj.seed,
        "config": json.dumps(traj.config, sort_keys=True), "config_hash": config_hash(traj.config),
        "policy": traj.policy, "group": traj.group, "episode_return": traj.episode_return,
        "reward_terms": json.dumps(traj.reward_terms), "num_steps": len(traj.steps),
        "num_segments": len(segments),
        "final_observation": replace_surrogates(traj.final_observation),
        "parent_id": traj.parent_id, "parent_step": traj.parent_step,
        "policy_version": traj.policy_version,
    }
    return [{
        **common, "segment_index": row, "step_start": seg.step_start,
        "step_end": seg.step_end, "end_reason": seg.end_reason, "prompt_ids": seg.prompt_ids,
        "completion_ids": seg.completion_ids, "loss_mask": seg.loss_mask,
        "logprobs": seg.logprobs, "memory_mask": seg.memory_mask,
        "steps": [step_record(s) for s in traj.steps[seg.step_start:seg.step_end]],
    } for row, seg in enumerate(segments)]


_STEP_FIELDS = [
    ("index", pa.int32()), ("observation", pa.string()), ("action", pa.string()),
    ("ops", pa.string()), ("op_results", pa.string()), ("parse_error", pa.string()),
    ("reward", pa.float64()), ("reward_terms", pa.string()), ("terminated", pa.bool_()),
    ("truncated", pa.bool_()), ("segment_end", pa.string()), ("info", pa.string())]
_SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("env_id", pa.string()), ("seed", pa.int64()),
    ("config", pa.string()), ("config_hash", pa.string()), ("policy", pa.string()),
    ("group", pa.int64()), ("episode_return", pa.float64()), ("reward_terms", pa.string()),
    ("num_steps", pa.int32()), ("num_segments", pa.int32()), ("final_observation", pa.string()),
    ("parent_id", pa.string()), ("parent_step", pa.int64()), ("policy_version", pa.int64()),
    ("segment_index", pa.int32()), ("step_start", pa.int32()), ("step_end", pa.int32()),
    ("end_reason", pa.string()), ("prompt_ids", pa.list_(pa.int32())),
    ("completion_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.int8())),
    ("logprobs", pa.list_(pa.float32())), ("memory_mask", pa.list_(pa.int8())),
    ("steps", pa.list_(pa.struct(_STEP_FIELDS))),
], metadata={"memgym.schema_version": str(SCHEMA_VERSION)})
_V2_COLUMNS = set(_SCHEMA.names) - {"memory_mask", "policy_version"}
_V1_COLUMNS = _V2_COLUMNS - {"parent_id", "parent_step"}


def write_trajectories(trajectories: list[Trajectory], path: str | Path) -> Path:
    """Write trajectories to Parquet atomically (temp file + rename), one row per segment
    (steps no token segment covers get a token-less row).

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


def _migrate_v1(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema 1 → 2: no parent (``""`` / ``-1``), step ``info`` not recorded (None)."""
    frame = frame.copy()
    frame["parent_id"] = ""
    frame["parent_step"] = -1
    frame["steps"] = pd.Series([[{**rec, "info": None} for rec in steps]
                                for steps in frame["steps"]], index=frame.index, dtype=object)
    return frame


def _migrate_v2(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema 2 → 3: memory masks and policy versions not recorded (``[]``, ``-1``)."""
    frame = frame.copy()
    frame["policy_version"] = -1
    frame["memory_mask"] = pd.Series([np.zeros(0, np.int8)] * len(frame), index=frame.index,
                                     dtype=object)
    return frame


def load_trajectories(path: str | Path) -> pd.DataFrame:
    """Read a trajectory file, or a run's dataset directory of ``part-*.parquet`` files (parts
    in order, :mod:`memgym.trajectory_log`), as a DataFrame, one row per segment, in the
    current schema. Schema-1 and -2 files are migrated (see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SchemaError: A file is not readable Parquet, was not written by memgym, lacks columns,
            or has a schema version this memgym cannot read; a directory holds no part file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trajectory file")
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files:
        raise SchemaError(f"{path}: a directory without part-*.parquet files")
    try:
        return pd.concat([_read(f) for f in files], ignore_index=True)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # bytes that are no file
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read(path: str | Path) -> pd.DataFrame:
    table = pq.read_table(path)
    table.validate(full=True)  # e.g. strings that are not UTF-8, offsets out of range
    version = (table.schema.metadata or {}).get(b"memgym.schema_version")
    if version is None:
        raise SchemaError(
            f"{path}: no memgym.schema_version metadata; not a memgym trajectory file")
    if version.decode(errors="replace") not in ("1", "2", str(SCHEMA_VERSION)):
        raise SchemaError(f"{path}: schema version {version.decode(errors='replace')}, this "
                          f"memgym reads version {SCHEMA_VERSION} (and migrates versions 1, 2)")
    required = {b"1": _V1_COLUMNS, b"2": _V2_COLUMNS}.get(version, set(_SCHEMA.names))
    missing = required - set(table.schema.names)
    if missing:
        raise SchemaError(f"{path}: missing columns {sorted(missing)} for schema version "
                          f"{version.decode()}")
    wrong = []  # columns whose values do not convert to the schema's type
    for f in _SCHEMA:
        column = table[f.name] if f.name in required else None
        if column is not None and not column.type.equals(f.type) and not (
                f.name == "steps" and version == b"1"):
            try:
                table = table.set_column(table.schema.get_field_index(f.name), f.name,
                                         column.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                wrong.append(f"{f.name} is {column.type}, expected {f.type}")
    if wrong:
        raise SchemaError(f"{path}: wrong column types: {'; '.join(wrong)}")
    if table.num_rows == 0:
        raise SchemaError(f"{path}: no rows: the file holds no trajectory")
    steps = pc.list_flatten(table["steps"])
    nulls = [f.name for f in _SCHEMA if f.name in table.schema.names and table[f.name].null_count]
    nulls += [f"steps.{name}" for name in steps.type.names  # a step's info may be null
              if name != "info" and pc.struct_field(steps, name).null_count]
    if nulls:
        raise SchemaError(f"{path}: missing values (null) in {', '.join(nulls)}")
    frame = table.to_pandas()
    if version == b"1":
        frame = _migrate_v1(frame)
    return _migrate_v2(frame) if version in (b"1", b"2") else frame


@dataclass
class StoredTrajectory:
    """One trajectory's rows of a trajectory frame, not decoded (what replay compares against).

    Attributes:
        meta: Trajectory columns of its first row (``trajectory_id``, ``env_id``, ``seed``,
            ``config`` (JSON text), ``policy``, ``group``, ``num_steps``, ``final_observation``,
            ``parent_id``, ``parent_step``, ``policy_version``).
        steps: Step records as stored (``ops``, ``op_results``, ``parse_error``,
            ``reward_terms`` and ``info`` as JSON text), rows in ``segment_index`` order.
        segments: One per row, in order (token-less ones included).
        problem: Why the rows do not hold steps ``0..num_steps-1`` exactly once, in order
            ("" if they do).
        first_bad_step: Index of the first step that is missing or out of place (``num_steps``
            when there is no problem).
    """

    meta: dict
    steps: list[dict]
    segments: list[Segment]
    problem: str = ""
    first_bad_step: int = 0

    @property
    def id(self) -> str:
        """The trajectory id."""
        return self.meta["trajectory_id"]


_META = ("trajectory_id", "env_id", "seed", "config", "policy", "group", "num_steps",
         "final_observation", "parent_id", "parent_step", "policy_version")
TOKEN_COLUMNS = ("prompt_ids", "completion_ids", "loss_mask", "logprobs", "memory_mask")
_SEGMENT = ("segment_index", "step_start", "step_end", "end_reason", *TOKEN_COLUMNS, "steps")


def _check_steps(indices: list[int], num_steps: int) -> tuple[str, int]:
    """(problem, first bad step) of the step indices found for a trajectory."""
    bad = next((pos for pos, index in enumerate(indices) if index != pos), len(indices))
    if bad == len(indices) == num_steps:
        return "", num_steps
    missing = sorted(set(range(num_steps)) - set(indices))
    extra = [i for i in indices if not 0 <= i < num_steps]
    parts = ([f"steps {missing} missing"] if missing else []) + (
        [f"unexpected steps {extra}"] if extra else [])
    parts = parts or [f"step {indices[bad]} found at position {bad}"]
    first_bad = min(bad, num_steps, *missing[:1])
    return f"rows hold {len(indices)} of {num_steps} steps: {'; '.join(parts)}", first_bad


def stored_trajectories(frame: pd.DataFrame, segments: bool = True) -> list[StoredTrajectory]:
    """Group a :func:`load_trajectories` frame by trajectory, in file order, without decoding.

    Args:
        frame: Segment rows.
        segments: Build the token :class:`Segment` s; with False they are left empty and the
            frame may lack :data:`TOKEN_COLUMNS` (replay reads steps only).

    Returns:
        One :class:`StoredTrajectory` per trajectory id; inconsistent rows are described in
        its ``problem``, not raised.
    """
    names = (*_META, *_SEGMENT) if segments else (*_META, "segment_index", "steps")
    cols = {name: frame[name].tolist() for name in names}
    rows_of: dict[str, list[int]] = {}
    for row, traj_id in enumerate(cols["trajectory_id"]):
        rows_of.setdefault(traj_id, []).append(row)
    out = []
    for rows in rows_of.values():
        rows.sort(key=lambda r: cols["segment_index"][r])
        meta = {name: cols[name][rows[0]] for name in _META}
        steps = [rec for r in rows for rec in cols["steps"][r]]
        token_segments = [Segment(
            int(cols["segment_index"][r]), int(cols["step_start"][r]), int(cols["step_end"][r]),
            np.asarray(cols["prompt_ids"][r]).tolist(),
            np.asarray(cols["completion_ids"][r]).tolist(),
            np.asarray(cols["loss_mask"][r]).tolist(), np.asarray(cols["logprobs"][r]).tolist(),
            cols["end_reason"][r], np.asarray(cols["memory_mask"][r]).tolist())
            for r in rows] if segments else []
        problem, bad = _check_steps([int(rec["index"]) for rec in steps], int(meta["num_steps"]))
        out.append(StoredTrajectory(meta, steps, token_segments, problem, bad))
    return out


def _decode_step(rec: dict) -> Step:
    info = rec.get("info")
    return Step(
        index=int(rec["index"]), observation=rec["observation"], action=rec["action"],
        ops=json.loads(rec["ops"]), op_results=json.loads(rec["op_results"]),
        parse_error=json.loads(rec["parse_error"]), reward=float(rec["reward"]),
        reward_terms=json.loads(rec["reward_terms"]), terminated=bool(rec["terminated"]),
        truncated=bool(rec["truncated"]), segment_end=rec["segment_end"] or None,
        info=None if info is None else json.loads(info))


def decode_trajectory(stored: StoredTrajectory) -> Trajectory:
    """Rebuild a :class:`Trajectory` (steps without token ids; token segments renumbered
    from 0) from its stored rows.

    Raises:
        SchemaError: The rows do not hold its steps exactly once, in order.
    """
    if stored.problem:
        raise SchemaError(f"trajectory {stored.id}: {stored.problem}")
    meta = stored.meta
    segments = [seg for seg in stored.segments if seg.prompt_ids or seg.completion_ids]
    for number, seg in enumerate(segments):
        seg.index = number
    try:
        steps, config = [_decode_step(rec) for rec in stored.steps], json.loads(meta["config"])
    except json.JSONDecodeError as exc:
        raise SchemaError(f"trajectory {stored.id}: a JSON field is not valid JSON ({exc})"
                          ) from exc
    return Trajectory(
        env_id=meta["env_id"], seed=int(meta["seed"]), config=config, policy=meta["policy"],
        steps=steps, final_observation=meta["final_observation"], id=stored.id,
        group=int(meta["group"]), segments=segments, parent_id=meta["parent_id"],
        parent_step=int(meta["parent_step"]), policy_version=int(meta["policy_version"]))


def trajectories_from_frame(frame: pd.DataFrame) -> list[Trajectory]:
    """Rebuild :class:`Trajectory` objects from segment rows, in file order.

    Raises:
        SchemaError: A trajectory's segment rows do not cover its steps exactly once.
    """
    return [decode_trajectory(stored) for stored in stored_trajectories(frame)]
