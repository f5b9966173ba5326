"""A run's trajectory dataset: appends write only the new rows; resume truncates exactly."""

import pandas as pd
import pyarrow.parquet as pq
import pytest

from memgym import load_trajectories, write_trajectories
from memgym.envs import baselines
from memgym.errors import ConfigError, SchemaError
from memgym.replay import replay
from memgym.rollouts import run_episodes
from memgym.trajectory import trajectories_from_frame
from memgym.trajectory_log import TrajectoryLog, dataset_parts

from .conftest import ENV_ID, episode_view


@pytest.fixture(scope="module")
def batches():
    """Three batches of scripted trajectories (3, 2 and 4 episodes)."""
    policy = baselines(ENV_ID)["mem0-like"]()
    return [run_episodes(ENV_ID, {"window": 3}, policy, list(range(start, start + n)),
                         progress=False) for start, n in ((0, 3), (10, 2), (20, 4))]


def test_appends_write_only_new_rows_and_read_back_in_order(batches, tmp_path):
    log = TrajectoryLog(tmp_path / "trajectories.parquet")
    written = []
    for batch in batches:
        before = [p.stat().st_mtime_ns for p in dataset_parts(log.path)]
        part = log.append(batch)
        rows = pq.read_metadata(part).num_rows
        written.append(rows)
        assert rows == sum(max(1, len(t.segments)) for t in batch)  # this batch's rows only
        assert [p.stat().st_mtime_ns for p in dataset_parts(log.path)][:-1] == before
    assert log.append([]) is None
    assert [p.name for p in dataset_parts(log.path)] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert log.count == 9 and log.rows_written == sum(written)
    frame = load_trajectories(log.path)
    # the same as one file of all of them
    whole = load_trajectories(write_trajectories([t for b in batches for t in b],
                                                 tmp_path / "whole.parquet"))
    pd.testing.assert_frame_equal(frame, whole)
    assert [episode_view(t) for t in trajectories_from_frame(frame)] == [
        episode_view(t) for t in trajectories_from_frame(whole)]
    assert len(pd.read_parquet(log.path)) == len(frame)  # pandas reads the dataset too
    assert replay(frame).ok
    assert TrajectoryLog(log.path).count == 9  # reopened: counted from the parts


def test_truncate_keeps_the_first_trajectories(batches, tmp_path):
    everything = [t for batch in batches for t in batch]
    for keep in (0, 2, 3, 4, 9):
        log = TrajectoryLog(tmp_path / f"run{keep}")
        for batch in batches:
            log.append(batch)
        log.truncate(keep)
        assert log.count == keep
        kept = (trajectories_from_frame(load_trajectories(log.path))
                if dataset_parts(log.path) else [])
        assert [t.id for t in kept] == [t.id for t in everything[:keep]]
        log.append(batches[1])  # the resumed run goes on appending after what it kept
        assert TrajectoryLog(log.path).count == keep + 2
    with pytest.raises(ConfigError, match="holds 2 trajectories, the checkpoint expects"):
        TrajectoryLog(tmp_path / "run0").truncate(3)


def test_a_single_file_becomes_the_first_part(batches, tmp_path):
    path = write_trajectories(batches[0], tmp_path / "trajectories.parquet")
    log = TrajectoryLog(path)
    assert path.is_dir() and log.count == 3
    log.append(batches[1])
    assert [t.id for t in trajectories_from_frame(load_trajectories(path))] == [
        t.id for t in batches[0] + batches[1]]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SchemaError, match="without part-"):
        load_trajectories(empty)
