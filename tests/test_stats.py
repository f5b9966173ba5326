"""Bootstrap intervals (memgym.stats), paired comparison to the best heuristic
(memgym.report.pair_with_best_heuristic) and `memgym eval`'s statistics on a cheap env."""

import inspect
import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from memgym.cli import app
from memgym.errors import ConfigError
from memgym.report import EvalResult, pair_with_best_heuristic
from memgym.stats import bootstrap_ci, bootstrap_means, paired_bootstrap_ci

SYNTHETIC = "memgym/SyntheticMemoryManager-v0"


def test_two_point_sample_gives_the_whole_range():
    # resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # quantiles of 10,000 of them are 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)


def test_interval_matches_the_exact_bootstrap_distribution():
    values = [0.0, 1.0, 2.0, 10.0]
    # all 4**4 equally likely resamples: the exact bootstrap distribution of the mean
    exact = np.array([sum(values[i] for i in idx) / 4
                      for idx in itertools.product(range(4), repeat=4)])
    mean, low, high = bootstrap_ci(values)
    assert mean == 3.25
    lower = np.quantile(exact, [0.015, 0.035], method="inverted_cdf")
    upper = np.quantile(exact, [0.965, 0.985], method="inverted_cdf")
    assert lower[0] <= low <= lower[1] and upper[0] <= high <= upper[1]


def test_interval_of_a_large_normal_sample_is_the_normal_theory_one():
    values = np.random.default_rng(3).normal(1.0, 2.0, size=400)
    mean, low, high = bootstrap_ci(values)
    half = 1.96 * values.std() / np.sqrt(values.size)
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(mean - half, abs=0.1 * half)
    assert high == pytest.approx(mean + half, abs=0.1 * half)
    _, low90, high90 = bootstrap_ci(values, level=0.9)
    assert low < low90 < mean < high90 < high


def test_constant_sample_has_zero_width():
    mean, low, high = bootstrap_ci([0.1] * 7)
    assert low == high and mean == pytest.approx(0.1) and low == pytest.approx(0.1)
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)


def test_same_rng_seed_same_interval():
    values = np.random.default_rng(0).random(30)
    assert bootstrap_ci(values, rng_seed=5) == bootstrap_ci(values, rng_seed=5)
    assert bootstrap_ci(values, rng_seed=5) != bootstrap_ci(values, rng_seed=6)
    assert bootstrap_means(values, resamples=7, rng_seed=1).shape == (7,)
    state = np.random.get_state()[1].copy()
    bootstrap_ci(values)
    assert (np.random.get_state()[1] == state).all()  # the global RNG is left alone


def test_paired_difference_of_identical_policies_is_exactly_zero():
    returns = np.random.default_rng(1).normal(size=25)
    assert paired_bootstrap_ci(returns, returns.copy()) == (0.0, 0.0, 0.0)


def test_paired_interval_is_narrower_than_unpaired_on_correlated_episodes():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0.0, 1.0, size=50)  # shared by both policies, episode by episode
    a = difficulty + 0.2 + rng.normal(0.0, 0.1, size=50)
    b = difficulty + rng.normal(0.0, 0.1, size=50)
    diff, low, high = paired_bootstrap_ci(a, b, seeds_a=range(50), seeds_b=range(50))
    assert diff == pytest.approx(a.mean() - b.mean())
    # unpaired: the two samples resampled independently
    unpaired = bootstrap_means(a, rng_seed=1) - bootstrap_means(b, rng_seed=2)
    u_low, u_high = np.quantile(unpaired, [0.025, 0.975])
    assert high - low < 0.25 * (u_high - u_low)
    assert low > 0.0 and u_low < 0.0 < u_high  # only the paired test sees the improvement


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bootstrap_ci([]), "empty"),
    (lambda: bootstrap_ci([1.0, float("nan")]), "NaN"),
    (lambda: bootstrap_ci([[1.0, 2.0]]), "1-D"),
    (lambda: bootstrap_ci(["a"]), "numbers"),
    (lambda: bootstrap_ci([1.0], level=1.0), "level"),
    (lambda: bootstrap_ci([1.0], resamples=0), "resamples"),
    (lambda: paired_bootstrap_ci([1.0, 2.0], [1.0]), "same episodes"),
    (lambda: paired_bootstrap_ci([1.0], [1.0], seeds_a=[0]), "both samples"),
    (lambda: paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0], [0, 1], [0, 2]),
     "episode 1 has seed 1 in a and 2 in b"),
    (lambda: paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0], [0], [0]), "in length"),
])
def test_bad_input_is_a_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def _result(policy, returns, seeds=None):
    returns = [float(r) for r in returns]
    mean, low, high = bootstrap_ci(returns)
    return EvalResult(policy, mean, float(np.std(returns)), len(returns), 0.0, low, high,
                      seeds=list(seeds or range(len(returns))), returns=returns)


def test_pairing_is_against_the_best_heuristic_oracle_excluded():
    results = [_result("oracle", [1, 1, 1, 1]), _result("store-all", [0, 1, 0, 1]),
               _result("noop", [0, 0, 0, 0]), _result("llm", [1, 1, 0, 1]),
               EvalResult("nothing-run", float("nan"), float("nan"), 0, float("nan"))]
    best = pair_with_best_heuristic(results, ["oracle", "evidence", "store-all", "noop"])
    assert best is results[1]
    oracle, store, noop, llm, empty = results
    assert (store.paired_with, store.paired_diff_low, store.paired_diff_high) == (
        "store-all", 0.0, 0.0)
    assert llm.paired_with == "store-all" and llm.paired_diff == 0.25
    # differences [1, 0, 0, 0]: a resample mean is k/4 with k ~ Binomial(4, 1/4);
    # P(k = 0) = 0.32 > 2.5%, P(k >= 3) = 5.1% > 2.5% > P(k = 4) = 0.4%
    assert llm.paired_diff_low == 0.0 and llm.paired_diff_high == 0.75
    assert noop.paired_diff == -0.5 and oracle.paired_diff == 0.5
    assert empty.paired_with is None and empty.paired_diff_low is None
    assert "returns" not in llm.row() and "seeds" not in llm.row()
    assert pair_with_best_heuristic([_result("llm", [1, 0])], ["oracle", "noop"]) is None
    # privileged baselines (gold data) are never the reference, by name or class attribute
    teacher = type("Teacher", (), {"privileged": True})
    pair = [_result("evidence", [1, 1]), _result("teacher", [1, 1]), _result("noop", [0, 0])]
    assert pair_with_best_heuristic(pair, {"evidence": object, "teacher": teacher,
                                           "noop": object}) is pair[2]
    with pytest.raises(ConfigError, match="same seeds"):
        pair_with_best_heuristic([_result("noop", [0, 0]), _result("llm", [1, 0], [5, 6])],
                                 ["noop"])


def test_eval_command_reports_intervals_and_paired_differences_reproducibly(tmp_path):
    runs = []
    for name in ("a.json", "b.json"):
        args = ["eval", SYNTHETIC, "--policy", "store-all", "--policy", "mem0-like",
                "--episodes", "5", "--seed-base", "7", "--num-envs", "5",
                "--json", str(tmp_path / name), "--markdown", str(tmp_path / "table.md")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        runs.append((tmp_path / name).read_text())
    assert runs[0] == runs[1]  # same seeds, same bootstrap RNG: the same file
    assert "seeds 7..11" in result.output and "95% CI" in result.output
    rows = {r["policy"]: r for r in json.loads(runs[0])}
    assert set(rows) == {"store-all", "mem0-like"}
    best = max(rows, key=lambda p: rows[p]["mean"])
    for row in rows.values():
        assert row["env_id"] == SYNTHETIC and row["episodes"] == 5
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        assert row["paired_with"] == best
        assert row["paired_diff_low"] <= row["paired_diff"] <= row["paired_diff_high"]
    assert rows[best]["paired_diff_low"] == rows[best]["paired_diff_high"] == 0.0
    other = rows[({"store-all", "mem0-like"} - {best}).pop()]
    assert other["paired_diff"] == pytest.approx(other["mean"] - rows[best]["mean"])
    table = (tmp_path / "table.md").read_text()
    assert "paired Δ vs best heuristic" in table and "| reference |" in table

    from memgym.cli import eval_
    from memgym.train import EVAL_SEED_BASE

    assert inspect.signature(eval_).parameters["seed_base"].default == EVAL_SEED_BASE
    refused = CliRunner().invoke(app, ["eval", SYNTHETIC, "--policy", "noop", "--episodes", "0"])
    assert isinstance(refused.exception, ConfigError)
