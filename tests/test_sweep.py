"""`memgym eval --sweep`: one evaluation per value of an env option on the same seeds, one CSV
row per value and policy equal to a plain `memgym eval -e KEY=VALUE`, and the PNG."""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from memgym.cli import app
from memgym.errors import ConfigError
from memgym.report import summarize
from memgym.sweep import COLUMNS, parse_sweep, plot_sweep, sweep_frame
from memgym.trajectory import Step, Trajectory

SYNTHETIC = "memgym/SyntheticMemoryManager-v1"
COMMON = ["--policy", "store-all", "--policy", "mem0-like", "--episodes", "4", "--seed-base",
          "3", "--num-envs", "4", "-e", "num_keys=4", "-e", "num_questions=2",
          "-e", "interference=1"]

def test_sweep_rows_equal_eval_at_each_value_alone(tmp_path):
    stem = tmp_path / "out" / "updates"
    result = CliRunner().invoke(app, ["eval", SYNTHETIC, *COMMON,
                                      "--sweep", "num_updates=8,48", "--sweep-out", str(stem)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(stem.with_suffix(".csv"))
    assert list(frame.columns) == list(COLUMNS)
    assert list(zip(frame["value"], frame["policy"], strict=True)) == [
        (8, "store-all"), (8, "mem0-like"), (48, "store-all"), (48, "mem0-like")]
    assert (frame["key"] == "num_updates").all() and (frame["episodes"] == 4).all()
    assert frame["peak_context_tokens"].isna().all()  # the memory manager does not report it
    png = stem.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG")
    for value in (8, 48):
        alone = tmp_path / f"{value}.json"
        result = CliRunner().invoke(app, ["eval", SYNTHETIC, *COMMON, "-e",
                                          f"num_updates={value}", "--json", str(alone)])
        assert result.exit_code == 0, result.output
        for row in json.loads(alone.read_text()):
            swept = frame[(frame["value"] == value) & (frame["policy"] == row["policy"])]
            for column in ("mean", "ci_low", "ci_high", "std", "paired_diff",
                           "paired_diff_low", "paired_diff_high"):
                assert swept[column].item() == pytest.approx(row[column]), column
            assert swept["paired_with"].item() == row["paired_with"]
    # the longer stream is harder for the first-come store-all: the sweep resolves it
    means = frame.set_index(["value", "policy"])["mean"]
    assert means[(48, "store-all")] < means[(8, "store-all")]

@pytest.mark.parametrize(("sweep", "match"), [
    ("bogus=1,2", "bogus=1 on memgym/SyntheticMemoryManager-v1: .*unexpected keyword"),
    ("num_updates=8,[2", "cannot parse value '\\[2'"),
    ("num_updates=8,,16", "empty value"),
    ("num_updates=8,8", "given twice"),
    ("num_updates", "KEY=V1,V2"),
    ("num_keys=4,5", "do not also pass -e num_keys"),
    ("num_updates=8,2", "num_updates=2 on .*num_updates must be >="),
])
def test_bad_sweep_fails_before_any_episode(tmp_path, sweep, match):
    stem = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", SYNTHETIC, *COMMON, "--sweep", sweep,
                                      "--sweep-out", str(stem)])
    assert isinstance(result.exception, ConfigError), result.output
    assert result.exception.args[0].startswith("--sweep")

    assert re.search(match, str(result.exception)), str(result.exception)
    assert not stem.with_suffix(".csv").exists()

def test_parse_sweep_reads_yaml_scalars():
    assert parse_sweep("context_chars=8000, 16000,32000") == ("context_chars",
                                                            [8000, 16000, 32000])
    assert parse_sweep("source=locomo,synthetic-kv") == ("source", ["locomo", "synthetic-kv"])
    assert parse_sweep("hotpot_fraction=0.25,1") == ("hotpot_fraction", [0.25, 1])

def _result(policy, value, mean, peak=None):
    return summarize(policy, [Trajectory("e", s, {}, policy, [Step(
        0, "", "", reward=mean, info=None if peak is None else {"peak_context_tokens": peak})])
        for s in range(2)])

def test_plot_is_log_x_past_a_tenfold_span_and_draws_peak_context(tmp_path):
    tables = [(v, [("e", _result("a", v, 0.5, peak=v)), ("e", _result("b", v, 0.25))])
              for v in (2000, 8000, 32000)]
    frame = sweep_frame("context_chars", tables)
    peaks = frame["peak_context_tokens"]
    assert peaks[::2].tolist() == [2000, 8000, 32000] and peaks[1::2].isna().all()
    fig = plot_sweep(frame, tmp_path / "s.png")
    score, peak = fig.axes
    assert score.get_xscale() == peak.get_xscale() == "log"
    assert [line.get_label() for line in score.get_lines()] == ["a", "b"]
    assert [line.get_label() for line in peak.get_lines()] == ["a"]  # only a reports it
    narrow = sweep_frame("k", [(v, [("e", _result("a", v, 1.0))]) for v in (1, 2, 4)])
    (only,) = plot_sweep(narrow, tmp_path / "n.png").axes  # no peak: one panel
    assert only.get_xscale() == "linear"
    words = sweep_frame("source", [(v, [("e", _result("a", v, 1.0))]) for v in ("x", "y")])
    (axis,) = plot_sweep(words, tmp_path / "w.png").axes
    assert [t.get_text() for t in axis.get_xticklabels()] == ["x", "y"]

def test_peak_context_is_the_mean_of_each_episodes_largest():
    steps = [Step(k, "", "", info={"peak_context_tokens": p}) for k, p in enumerate((5, 9, 7))]
    other = [Step(0, "", "", info={"peak_context_tokens": 3})]
    unreported = [Step(0, "", "", info={})]
    trajs = [Trajectory("e", s, {}, "p", st) for s, st in enumerate((steps, other, unreported))]
    assert summarize("p", trajs).peak_context_tokens == 6.0  # (9 + 3) / 2
    assert summarize("p", trajs[2:]).peak_context_tokens is None
