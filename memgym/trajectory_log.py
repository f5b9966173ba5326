"""A run's trajectories on disk: a Parquet dataset that grows by one file per append.

``memgym train`` appends every evaluation's and every iteration's trajectories as they come, so a
write costs the new rows only (never the whole history) and the loop keeps none of them in
memory. The dataset is a directory of ``part-00000.parquet``, ``part-00001.parquet``, ... (the
layout Spark and pyarrow's ``write_dataset`` give a ``name.parquet`` directory), each file a
:func:`~memgym.trajectory.write_trajectories` file written atomically; pandas, pyarrow, DuckDB
and :func:`~memgym.trajectory.load_trajectories` read it whole, parts in order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memgym.errors import ConfigError
from memgym.trajectory import Trajectory, write_trajectories

PART = re.compile(r"part-(\d{5})\.parquet")


def dataset_parts(path: str | Path) -> list[Path]:
    """The part files of a trajectory dataset directory, in order."""
    return sorted(p for p in Path(path).iterdir() if PART.fullmatch(p.name))


def _count(part: Path) -> int:
    """Trajectories in one part file (its distinct trajectory ids; only that column is read)."""
    return len(set(pq.read_table(part, columns=["trajectory_id"])["trajectory_id"].to_pylist()))


class TrajectoryLog:
    """Appends trajectories to the dataset at ``path``, one part file per :meth:`append`.

    A single trajectory file at ``path`` (a run saved before the dataset layout) becomes the
    dataset's first part.

    Args:
        path: The dataset directory (created if missing).

    Attributes:
        count: Trajectories in the dataset.
        rows_written: Parquet rows (segments) this log has written, for tests and benchmarks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_file():
            legacy = self.path.with_name(f".{self.path.name}.legacy")
            self.path.replace(legacy)
            self.path.mkdir()
            legacy.replace(self.path / "part-00000.parquet")
        self.path.mkdir(parents=True, exist_ok=True)
        self._parts = dataset_parts(self.path)
        self._counts = [_count(p) for p in self._parts]
        self.rows_written = 0

    @property
    def count(self) -> int:
        """Trajectories in the dataset."""
        return sum(self._counts)

    def append(self, trajectories: Sequence[Trajectory]) -> Path | None:
        """Write ``trajectories`` as the next part file (nothing for an empty batch).

        Returns:
            The part written, or None.
        """
        if not trajectories:
            return None
        index = int(PART.fullmatch(self._parts[-1].name).group(1)) + 1 if self._parts else 0
        part = write_trajectories(list(trajectories), self.path / f"part-{index:05d}.parquet")
        self._parts.append(part)
        self._counts.append(len(trajectories))
        self.rows_written += pq.read_metadata(part).num_rows
        return part

    def truncate(self, keep: int) -> None:
        """Keep the first ``keep`` trajectories (what a resumed run's checkpoint saw): later
        parts are deleted, and a part that holds both kinds is rewritten with its first ones.

        Raises:
            ConfigError: The dataset holds fewer than ``keep`` trajectories.
        """
        if keep > self.count:
            raise ConfigError(f"{self.path} holds {self.count} trajectories, the checkpoint "
                              f"expects at least {keep}")
        seen = 0
        for i, (part, count) in enumerate(zip(self._parts, self._counts, strict=True)):
            if seen + count > keep:
                for later in self._parts[i + 1:]:
                    later.unlink()
                if keep > seen:
                    table = pq.read_table(part)
                    ids = list(dict.fromkeys(table["trajectory_id"].to_pylist()))[:keep - seen]
                    tmp = part.with_name(f".{part.name}.tmp")
                    pq.write_table(table.filter(pc.is_in(table["trajectory_id"], pa.array(ids))),
                                   tmp)
                    tmp.replace(part)
                    self._parts, self._counts = self._parts[:i + 1], [*self._counts[:i],
                                                                      keep - seen]
                else:
                    part.unlink()
                    self._parts, self._counts = self._parts[:i], self._counts[:i]
                return
            seen += count
