import pyarrow.parquet as pq
import pytest

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


def test_wrong_schema_version_is_refused(tmp_path):
    traj = Trajectory("memgym/X-v0", 0, {}, "p", [_step(0, [], [], "end")])
    path = write_trajectories([traj], tmp_path / "t.parquet")
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({"memgym.schema_version": "99"}), path)
    with pytest.raises(SchemaError, match="schema version 99"):
        load_trajectories(path)
