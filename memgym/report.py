"""What a run reports: evaluation results (:class:`EvalResult`: mean return, its 95%
bootstrap interval and the paired difference to the best heuristic, :mod:`memgym.stats`) as
rich and markdown tables, ``metrics.csv`` / TensorBoard logging, and the run's plots
(``reward_curve.png``, ``kl.png``, ``op_mix.png``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from rich.console import Console
from rich.table import Table

from memgym.metrics import OP_KINDS
from memgym.stats import bootstrap_ci, paired_bootstrap_ci
from memgym.trajectory import Trajectory


def _figure(metrics: pd.DataFrame, columns: dict[str, str], ylabel: str, path: Path,
            hlines: dict[str, tuple[float, str, str]] | None = None) -> None:
    """Line plot of ``metrics[column]`` over iterations (``columns``: column → legend label;
    ``hlines``: legend label → (value, line style, colour) of a horizontal reference line)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for column, label in columns.items():
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            ax.plot(rows["iteration"], rows[column], marker="o", label=label)
    for label, (value, style, color) in (hlines or {}).items():
        ax.axhline(value, linestyle=style, color=color, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(metrics: pd.DataFrame, evals: dict, run_dir: Path) -> list[Path]:
    """``reward_curve.png`` (train reward, periodic val return, val before/after and every
    non-privileged scripted heuristic as reference lines), ``kl.png``
    (KL to the reference and clip fraction) and ``op_mix.png`` (ops per step by kind).

    Returns:
        The paths written.
    """
    paths = [run_dir / "reward_curve.png", run_dir / "kl.png", run_dir / "op_mix.png"]
    hlines = {f"val {name}": (evals[name]["mean"], style, "gray")
              for name, style in (("untrained", "--"), ("trained", "-")) if name in evals}
    heuristics = [name for name, row in evals.items()
                  if isinstance(row, dict) and name not in ("untrained", "trained", *PRIVILEGED)]
    hlines |= {f"val {name}": (evals[name]["mean"], ":", f"C{i + 2}")  # C0, C1: the curves
               for i, name in enumerate(heuristics)}
    _figure(metrics, {"reward_mean": "train reward (mean)", "val_return_mean": "val return"},
            "episode return", paths[0], hlines)
    _figure(metrics, {"kl": "KL to reference", "clip_frac": "clip fraction"}, "per token",
            paths[1])
    _figure(metrics, {f"op_{kind}": kind for kind in OP_KINDS}, "ops per step", paths[2])
    return paths


@dataclass
class EvalResult:
    """Return of a policy over ``episodes`` fixed-seed episodes.

    Attributes:
        policy: Name of the policy (a label, e.g. ``untrained``).
        mean: Mean episode return.
        std: Population std of the episode returns.
        episodes: How many episodes.
        parse_error_rate: Steps whose action did not parse / steps.
        ci_low: Lower end of the 95% percentile-bootstrap interval of ``mean``
            (:func:`memgym.stats.bootstrap_ci`, 10,000 resamples, RNG seed 0).
        ci_high: Upper end of that interval.
        paired_with: The best heuristic of the same evaluation (see
            :func:`pair_with_best_heuristic`), or None when none was evaluated.
        paired_diff: Mean over episodes of this return minus ``paired_with``'s on the same
            seed (0 for ``paired_with`` itself); None without a reference.
        paired_diff_low: Lower end of its 95% paired-bootstrap interval
            (:func:`memgym.stats.paired_bootstrap_ci`); 0 for the reference itself.
        paired_diff_high: Upper end of that interval.
        peak_context_tokens: Mean over episodes of the episode's peak context in tokens
            (the largest ``peak_context_tokens`` its steps' ``info`` recorded: MEM1's peak
            memory, reported by Mem1 and MemAct), over the episodes that record it; None when
            none does.
        seeds: Episode seeds, in the order of ``returns`` (not in :meth:`row`).
        returns: Episode returns (not in :meth:`row`).
    """

    policy: str
    mean: float
    std: float
    episodes: int
    parse_error_rate: float
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    paired_with: str | None = None
    paired_diff: float | None = None
    paired_diff_low: float | None = None
    paired_diff_high: float | None = None
    peak_context_tokens: float | None = None
    seeds: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)

    def row(self) -> dict:
        """The summary as a JSON-ready dict: every attribute but ``seeds`` and ``returns``."""
        return {k: v for k, v in self.__dict__.items() if k not in ("seeds", "returns")}


def _peak_context_tokens(trajectories: list[Trajectory]) -> float | None:
    """Mean over trajectories of the largest ``peak_context_tokens`` in their steps' recorded
    ``info`` (trajectories without it left out); None when none has it."""
    peaks = [max(values) for t in trajectories
             if (values := [s.info["peak_context_tokens"] for s in t.steps
                            if s.info and "peak_context_tokens" in s.info])]
    return float(np.mean(peaks)) if peaks else None


def summarize(policy: str, trajectories: list[Trajectory]) -> EvalResult:
    """Return statistics (mean, std, 95% bootstrap interval), parse-error rate and mean peak
    context (see :attr:`EvalResult.peak_context_tokens`) of a batch of trajectories (NaN
    statistics for none)."""
    returns = np.array([t.episode_return for t in trajectories], dtype=np.float64)
    steps = [s for t in trajectories for s in t.steps]
    errors = sum(s.parse_error is not None for s in steps) / max(len(steps), 1)
    if not len(returns):
        return EvalResult(policy, float("nan"), float("nan"), 0, errors)
    mean, low, high = bootstrap_ci(returns)
    return EvalResult(policy, mean, float(returns.std()), len(returns), errors, low, high,
                      peak_context_tokens=_peak_context_tokens(trajectories),
                      seeds=[int(t.seed) for t in trajectories], returns=returns.tolist())


PRIVILEGED = frozenset({"oracle", "evidence"})
"""Scripted baselines that read the gold data (``info["privileged"]``): never the reference."""


def pair_with_best_heuristic(results: list[EvalResult],
                             scripted: Mapping[str, type] | Iterable[str]) -> EvalResult | None:
    """Set the paired difference of every result against the best heuristic, in place.

    The best heuristic is the result with the highest mean among those whose policy is a
    scripted baseline of the env (``scripted``: :func:`memgym.envs.baselines`'s dict, or the
    names) that reads no gold data: not in :data:`PRIVILEGED` (``oracle``, the ``evidence``
    teacher) nor a class with a true ``privileged`` attribute; the first of equal means wins.
    Each result gets ``paired_with`` and its paired-bootstrap interval of the per-episode
    difference to it; the reference itself gets exactly 0 / 0. Results without episodes, and
    all results when no heuristic was evaluated, keep None.

    Returns:
        The best heuristic's result, or None.

    Raises:
        ConfigError: A result was not evaluated on the reference's seeds.
    """
    classes = scripted if isinstance(scripted, Mapping) else dict.fromkeys(scripted)
    names = {name for name, cls in classes.items()
             if name not in PRIVILEGED and not getattr(cls, "privileged", False)}
    candidates = [r for r in results if r.policy in names and r.returns]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: r.mean)
    for result in results:
        if not result.returns:
            continue
        diff, low, high = paired_bootstrap_ci(result.returns, best.returns, result.seeds,
                                              best.seeds)
        result.paired_with = best.policy
        result.paired_diff, result.paired_diff_low, result.paired_diff_high = diff, low, high
    return best


COLUMNS = ("policy", "mean return", "95% CI", "std", "episodes", "parse errors",
           "paired Δ vs best heuristic [95% CI]")


def _cells(r: EvalResult) -> list[str]:
    """The table cells of one result (see :data:`COLUMNS`)."""
    if r.paired_diff is None:
        paired = "—"
    elif r.paired_with == r.policy:
        paired = "reference"
    else:
        paired = f"{r.paired_diff:+.4f} [{r.paired_diff_low:+.4f}, {r.paired_diff_high:+.4f}]"
    return [r.policy, f"{r.mean:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]", f"{r.std:.4f}",
            str(r.episodes), f"{r.parse_error_rate:.1%}", paired]


def print_table(console: Console, title: str,
                results: list | list[tuple[str, object]]) -> None:
    """Print evaluation results (optionally ``(env id, result)`` pairs) as a rich table."""
    rows = [r if isinstance(r, tuple) else ("", r) for r in results]
    with_env = any(env for env, _ in rows)
    table = Table(title=title)
    for col in (("env",) if with_env else ()) + COLUMNS:
        table.add_column(col)
    for env, r in rows:
        table.add_row(*((env,) if with_env else ()), *_cells(r))
    console.print(table)


def markdown_table(rows: list[tuple[str, object]]) -> str:
    """``(env id, result)`` rows as a GitHub-flavoured markdown table."""
    lines = ["| env | " + " | ".join(COLUMNS) + " |", "|---|---|---:|---|---:|---:|---:|---|"]
    lines += ["| " + " | ".join([env, *_cells(r)]) + " |" for env, r in rows]
    return "\n".join(lines) + "\n"


class MetricsLog:
    """Per-iteration rows to ``metrics.csv`` (rewritten each time, so it is always complete) and,
    optionally, each numeric value to TensorBoard as ``<prefix>/<name>`` (prefix: the name up to
    its first ``_``, e.g. ``reward/reward_mean``, ``op/op_add``)."""

    def __init__(self, run_dir: Path, rows: list[dict], tensorboard: bool) -> None:
        self.path, self.rows = run_dir / "metrics.csv", rows
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged past the checkpoint we resume from
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=len(rows))
        self.frame().to_csv(self.path, index=False)

    def frame(self) -> pd.DataFrame:
        """All rows so far (columns ``iteration``, ``reward_mean``, ... even when empty)."""
        return pd.DataFrame(self.rows) if self.rows else pd.DataFrame(
            columns=["iteration", "reward_mean"])

    def log(self, row: dict) -> None:
        """Append ``row`` (it has ``iteration``) and write it out."""
        self.rows.append(row)
        self.frame().to_csv(self.path, index=False)
        if self.writer is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, int | float) and np.isfinite(value):
                    self.writer.add_scalar(f"{key.split('_')[0]}/{key}", value, row["iteration"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
