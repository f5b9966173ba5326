import contextlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgym import Step, Trajectory, build_segments, load_trajectories, write_trajectories
from memgym.errors import SchemaError
from memgym.trajectory import trajectories_from_frame


def _step(i, prompt, completion, end=None):
    return Step(index=i, observation=f"obs{i}", action=f"act{i}", reward=float(i),
                reward_terms={"qa": float(i)}, segment_end=end, prompt_ids=prompt,
                completion_ids=completion, logprobs=[-0.5] * len(completion))


def test_growing_prefix_is_one_segment_with_env_tokens_masked():
    steps = [_step(0, [1, 2], [3, 4]), _step(1, [1, 2, 3, 4, 9], [5], "end")]
    (seg,) = build_segments(steps)
    assert seg.prompt_ids == [1, 2] and seg.completion_ids == [3, 4, 9, 5]
    assert seg.loss_mask == [1, 1, 0, 1] and seg.logprobs == [-0.5, -0.5, 0.0, -0.5]
    assert (seg.step_start, seg.step_end, seg.end_reason) == (0, 2, "end")


def test_boundaries_declared_and_prefix_breaks():
    steps = [_step(0, [1], [2], "overwrite"), _step(1, [1, 2, 3], [4]), _step(2, [7], [8])]
    segs = build_segments(steps)
    assert [s.end_reason for s in segs] == ["overwrite", "prefix_break", "end"]
    assert [(s.step_start, s.step_end) for s in segs] == [(0, 1), (1, 2), (2, 3)]


def test_parquet_roundtrip(tmp_path):
    steps = [_step(0, [1], [2], "overwrite"), _step(1, [5], [6, 7], "end")]
    traj = Trajectory("memgym/X-v0", 3, {"window": 2}, "p", steps, "final", group=3,
                      segments=build_segments(steps))
    path = write_trajectories([traj], tmp_path / "t.parquet")
    frame = load_trajectories(path)
    assert len(frame) == 2 and list(frame["segment_index"]) == [0, 1]
    (back,) = trajectories_from_frame(frame)
    assert back.segments == traj.segments and back.episode_return == 1.0
    assert [s.action for s in back.steps] == ["act0", "act1"] and back.config == {"window": 2}
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_text_that_is_not_valid_unicode_does_not_stop_a_write(tmp_path):
    """A lone surrogate (from a buggy policy or data) anywhere in a trajectory: the file is
    written; text fields keep U+FFFD in its place, JSON fields keep it exactly."""
    bad = "x\ud800y\udfff"
    step = Step(index=0, observation=bad, action=bad, reward=-0.1, reward_terms={bad: -0.1},
                parse_error={"position": 1, "reason": bad}, terminated=True, segment_end="end",
                info={"note": bad, bad: [bad]}, ops=[{"kind": "add", "text": bad}])
    traj = Trajectory("memgym/X-v0", 0, {"k": bad}, "p", [step], final_observation=bad)
    (back,) = trajectories_from_frame(load_trajectories(
        write_trajectories([traj], tmp_path / "t.parquet")))
    fixed = "x\ufffdy\ufffd"
    assert (back.steps[0].observation, back.steps[0].action, back.final_observation) == (
        fixed, fixed, fixed)
    for name in ("reward_terms", "parse_error", "info", "ops"):
        assert getattr(back.steps[0], name) == getattr(step, name), name
    assert back.config == traj.config


def test_wrong_schema_version_is_refused(tmp_path):
    traj = Trajectory("memgym/X-v0", 0, {}, "p", [_step(0, [], [], "end")])
    path = write_trajectories([traj], tmp_path / "t.parquet")
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({"memgym.schema_version": "99"}), path)
    with pytest.raises(SchemaError, match="schema version 99"):
        load_trajectories(path)


_V1_STEP = pa.struct([
    ("index", pa.int32()), ("observation", pa.string()), ("action", pa.string()),
    ("ops", pa.string()), ("op_results", pa.string()), ("parse_error", pa.string()),
    ("reward", pa.float64()), ("reward_terms", pa.string()), ("terminated", pa.bool_()),
    ("truncated", pa.bool_()), ("segment_end", pa.string())])
_V1_SCHEMA = pa.schema([  # what memgym wrote before SCHEMA_VERSION 2
    ("trajectory_id", pa.string()), ("env_id", pa.string()), ("seed", pa.int64()),
    ("config", pa.string()), ("config_hash", pa.string()), ("policy", pa.string()),
    ("group", pa.int64()), ("episode_return", pa.float64()), ("reward_terms", pa.string()),
    ("num_steps", pa.int32()), ("num_segments", pa.int32()), ("final_observation", pa.string()),
    ("segment_index", pa.int32()), ("step_start", pa.int32()), ("step_end", pa.int32()),
    ("end_reason", pa.string()), ("prompt_ids", pa.list_(pa.int32())),
    ("completion_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.int8())),
    ("logprobs", pa.list_(pa.float32())), ("steps", pa.list_(_V1_STEP)),
], metadata={"memgym.schema_version": "1"})


def write_v1(trajectories, path):
    """A schema-1 file of ``trajectories`` (v2 rows minus the parent columns and step info)."""
    rows = pq.read_table(write_trajectories(trajectories, path)).to_pylist()
    for row in rows:
        del row["parent_id"], row["parent_step"], row["memory_mask"], row["policy_version"]
        for step in row["steps"]:
            del step["info"]
    pq.write_table(pa.Table.from_pylist(rows, schema=_V1_SCHEMA), path)
    return path


def test_schema_v1_is_migrated(tmp_path):
    steps = [_step(0, [1], [2], "overwrite"), _step(1, [5], [6, 7], "end")]
    traj = Trajectory("memgym/X-v0", 3, {"window": 2}, "p", steps, "final", group=3,
                      segments=build_segments(steps))
    frame = load_trajectories(write_v1([traj], tmp_path / "v1.parquet"))
    assert list(frame["parent_id"]) == ["", ""] and list(frame["parent_step"]) == [-1, -1]
    (back,) = trajectories_from_frame(frame)
    assert (back.parent_id, back.parent_step) == ("", -1)
    assert [s.info for s in back.steps] == [None, None]  # not recorded in version 1
    assert back.segments == traj.segments and [s.action for s in back.steps] == ["act0", "act1"]


def test_schema_v2_is_migrated_without_memory_masks_and_versions(tmp_path):
    steps = [_step(0, [1], [2], "overwrite"), _step(1, [5], [6, 7], "end")]
    steps[1].memory_mask = [0, 1]
    traj = Trajectory("memgym/X-v0", 3, {}, "p", steps, segments=build_segments(steps),
                      policy_version=5)
    assert [s.memory_mask for s in traj.segments] == [[], [0, 1]]  # step 0's is not known
    path = write_trajectories([traj], tmp_path / "v3.parquet")
    (back,) = trajectories_from_frame(load_trajectories(path))
    assert back.segments == traj.segments and back.policy_version == 5
    table = pq.read_table(path).drop_columns(["memory_mask", "policy_version"])
    pq.write_table(table.replace_schema_metadata({"memgym.schema_version": "2"}), path)
    (back,) = trajectories_from_frame(load_trajectories(path))
    assert [s.memory_mask for s in back.segments] == [[], []]  # not recorded in version 2
    assert back.policy_version == -1
    assert [s.completion_ids for s in back.segments] == [[2], [6, 7]]


def test_v1_scripted_file_replays(tmp_path):
    from memgym.envs import baselines
    from memgym.replay import replay
    from memgym.rollouts import run_episodes

    from .conftest import ENV_ID

    trajs = run_episodes(ENV_ID, {"window": 3}, baselines(ENV_ID)["mem0-like"](), [0, 1],
                         progress=False)
    report = replay(load_trajectories(write_v1(trajs, tmp_path / "v1.parquet")))
    assert report.ok and report.steps == 6


def test_parents_info_and_uncovered_steps_roundtrip(tmp_path):
    steps = [_step(0, [], [], "overwrite"), _step(1, [], [], "overwrite"),
             _step(2, [5], [6, 7], "end")]
    for step, info in zip(steps, [{"bank_size": 1}, {}, {"qa": [{"retrieved": ["0"]}]}],
                          strict=True):
        step.info = info
    traj = Trajectory("memgym/X-v0", 3, {}, "fork", steps, "", group=7, parent_id="abc",
                      parent_step=2, segments=build_segments(steps[2:]))
    frame = load_trajectories(write_trajectories([traj], tmp_path / "t.parquet"))
    assert list(frame["step_start"]) == [0, 2] and list(frame["prompt_ids"].map(len)) == [0, 1]
    (back,) = trajectories_from_frame(frame)
    assert back.parent_id == "abc" and back.parent_step == 2 and back.segments == traj.segments
    assert [s.info for s in back.steps] == [s.info for s in steps]


def test_unknown_metadata_is_refused(tmp_path):
    traj = Trajectory("memgym/X-v0", 0, {}, "p", [_step(0, [], [], "end")])
    path = write_trajectories([traj], tmp_path / "t.parquet")
    pq.write_table(pq.read_table(path).replace_schema_metadata({}), path)
    with pytest.raises(SchemaError, match=r"no memgym\.schema_version"):
        load_trajectories(path)


def _scripted_file(tmp_path):
    from memgym.envs import baselines
    from memgym.rollouts import run_episodes

    from .conftest import ENV_ID

    trajs = run_episodes(ENV_ID, {"window": 2}, baselines(ENV_ID)["store-all"](), [0],
                         progress=False)
    return write_trajectories(trajs, tmp_path / "good.parquet")


def _rewrite(path, out, change):
    """``path``'s rows changed by ``change(rows)``, written as ``out`` (same metadata)."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    return out


def _set_step(field, value):
    def change(rows):
        rows[0]["steps"][0][field] = value
    return change


def test_untrusted_files_give_one_typed_error(tmp_path):
    """Wrong column types, zero rows, bad JSON and env kwargs the env does not take: each a
    memgym error naming the problem (the CLI prints one line), never a traceback."""
    from memgym.errors import ConfigError
    from memgym.replay import replay

    good = _scripted_file(tmp_path)
    table = pq.read_table(good)
    seed_as_text = table.set_column(table.schema.get_field_index("seed"), "seed",
                                     pa.array([f"seed {s}" for s in table["seed"].to_pylist()]))
    pq.write_table(seed_as_text, tmp_path / "types.parquet")
    with pytest.raises(SchemaError, match="wrong column types: seed is string, expected int64"):
        load_trajectories(tmp_path / "types.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(SchemaError, match="no rows"):
        load_trajectories(tmp_path / "empty.parquet")
    for field in ("ops", "reward_terms", "info"):
        bad = _rewrite(good, tmp_path / f"{field}.parquet", _set_step(field, "{not json"))
        with pytest.raises(SchemaError, match="not valid JSON"):
            trajectories_from_frame(load_trajectories(bad))
        with pytest.raises(SchemaError, match="not valid JSON"):
            replay(load_trajectories(bad))

    def config(text):
        def change(rows):
            for row in rows:
                row["config"] = text
        return change

    for text, match in (('{"window": 2, "rm_rf": true}', "does not take these options"),
                        ("{oops", "not valid JSON"), ("[2]", "must be a JSON object")):
        bad = _rewrite(good, tmp_path / "config.parquet", config(text))
        with pytest.raises(ConfigError, match=match):
            replay(load_trajectories(bad))
    from memgym.replay import make_env

    with pytest.raises(ConfigError, match="does not fit the env"):
        make_env("memgym/MemAct-v0", '{"bogus": 1}')


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    """A real trajectory file (tokens, steps, info) and a scratch path for the fuzz test."""
    root = tmp_path_factory.mktemp("fuzz")
    steps = [_step(0, [1, 2], [3, 4], "overwrite"), _step(1, [5], [6], "end")]
    steps[0].info = {"qa": [{"question": "q", "retrieved": ["0"]}]}
    traj = Trajectory("memgym/X-v0", 3, {"w": 1}, "p", steps, "end", segments=build_segments(steps))
    return write_trajectories([traj], root / "good.parquet").read_bytes(), root / "fuzz.parquet"


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=4096))
def test_random_bytes_and_cut_files_give_only_schema_errors(fuzz_files, data, cut):
    """Arbitrary bytes, and a real file cut short or with bytes spliced in, are refused with a
    SchemaError (or read whole), never another exception."""
    real, path = fuzz_files
    for blob in (data, real[:cut], real[:cut] + data + real[cut + len(data):]):
        path.write_bytes(blob)
        with contextlib.suppress(SchemaError):
            trajectories_from_frame(load_trajectories(path))


def test_replay_never_opens_a_data_file_the_trajectory_names(tmp_path, monkeypatch):
    """A recorded ``data_path`` (a file the trajectory's author chose) is ignored: replay reads
    the pinned, sha256-checked data of the data directories."""
    import json

    from memgym.envs.locomo import data as locomo_data
    from memgym.replay import replay

    good = _scripted_file(tmp_path)
    evil = tmp_path / "evil.json"
    evil.write_text("[]")  # a LoCoMo file with no conversation

    def config(rows):
        for row in rows:
            row["config"] = json.dumps({**json.loads(row["config"]), "data_path": str(evil)})

    opened = []
    load = locomo_data.load_locomo
    monkeypatch.setattr("memgym.envs.locomo.source.load_locomo",
                        lambda path=None: opened.append(path) or load(path))
    report = replay(load_trajectories(_rewrite(good, tmp_path / "named.parquet", config)))
    assert report.ok and report.trajectories == 1 and str(evil) not in map(str, opened)
