"""Runs lose nothing: a run that dies after its first iteration (default config, no checkpoint)
keeps that iteration's trajectories and metrics, and a rerun into a run directory is refused
unless it resumes or overwrites (issue 20's fault-injection suite, run level)."""

from __future__ import annotations

import pandas as pd
import pytest

import memgym.train
from memgym.errors import ConfigError
from memgym.train import prepare_run_dir, train
from memgym.trainers.grpo import GRPOTrainer
from memgym.trajectory import load_trajectories, trajectories_from_frame

from .test_checkpoint_faults import tiny_config


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


@pytest.mark.slow
def test_a_run_killed_after_its_first_iteration_keeps_it(tmp_path, monkeypatch):
    step = GRPOTrainer.step

    def dies_on_the_second_update(self, batch):
        if self.global_step == 1:
            raise Killed
        return step(self, batch)

    monkeypatch.setattr(GRPOTrainer, "step", dies_on_the_second_update)
    config = tiny_config(tmp_path, iterations=3, checkpoint_every=0, eval_every=0)
    with pytest.raises(Killed):
        train(config)
    assert not (tmp_path / "checkpoint").exists()  # the default saves only at the end
    assert list(pd.read_csv(tmp_path / "metrics.csv")["iteration"]) == [0]
    trajs = trajectories_from_frame(load_trajectories(tmp_path / memgym.train.STEPS_FILE))
    rolled_out = [t for t in trajs if t.policy == "policy"]
    assert len(rolled_out) == config.episodes_per_iteration * config.group_size
    assert {t.policy_version for t in rolled_out} == {0}
    # a rerun is refused and leaves the run as it was
    with pytest.raises(ConfigError, match=r"--resume .* --overwrite"):
        train(config)
    assert list(pd.read_csv(tmp_path / "metrics.csv")["iteration"]) == [0]


def test_overwrite_replaces_a_run_and_resume_keeps_it(tmp_path):
    (tmp_path / "metrics.csv").write_text("iteration\n0\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds a run \(metrics\.csv\)"):
        prepare_run_dir(tmp_path, resume=False, overwrite=False)
    prepare_run_dir(tmp_path, resume=True, overwrite=False)
    assert (tmp_path / "metrics.csv").exists()
    with pytest.raises(ConfigError, match="exclude each other"):
        prepare_run_dir(tmp_path, resume=True, overwrite=True)
    prepare_run_dir(tmp_path, resume=False, overwrite=True)
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())
    fresh = tmp_path / "new" / "run"
    prepare_run_dir(fresh, resume=False, overwrite=False)  # an empty or missing dir is fine
    prepare_run_dir(fresh, resume=False, overwrite=False)
    assert fresh.is_dir()
