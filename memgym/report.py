"""What a run reports: rich and markdown tables of evaluation results, ``metrics.csv`` /
TensorBoard logging, and the run's plots (``reward_curve.png``, ``kl.png``, ``op_mix.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from rich.console import Console
from rich.table import Table

from memgym.metrics import OP_KINDS


def _figure(metrics: pd.DataFrame, columns: dict[str, str], ylabel: str, path: Path,
            hlines: dict[str, tuple[float, str]] | None = None) -> None:
    """Line plot of ``metrics[column]`` over iterations (``columns``: column → legend label)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for column, label in columns.items():
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            ax.plot(rows["iteration"], rows[column], marker="o", label=label)
    for label, (value, style) in (hlines or {}).items():
        ax.axhline(value, linestyle=style, color="gray", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(metrics: pd.DataFrame, evals: dict, run_dir: Path) -> list[Path]:
    """``reward_curve.png`` (train reward, periodic val return, val before/after), ``kl.png``
    (KL to the reference and clip fraction) and ``op_mix.png`` (ops per step by kind).

    Returns:
        The paths written.
    """
    paths = [run_dir / "reward_curve.png", run_dir / "kl.png", run_dir / "op_mix.png"]
    hlines = {f"val {name}": (evals[name]["mean"], style)
              for name, style in (("untrained", "--"), ("trained", "-")) if name in evals}
    _figure(metrics, {"reward_mean": "train reward (mean)", "val_return_mean": "val return"},
            "episode return", paths[0], hlines)
    _figure(metrics, {"kl": "KL to reference", "clip_frac": "clip fraction"}, "per token",
            paths[1])
    _figure(metrics, {f"op_{kind}": kind for kind in OP_KINDS}, "ops per step", paths[2])
    return paths


def print_table(console: Console, title: str,
                results: list | list[tuple[str, object]]) -> None:
    """Print evaluation results (optionally ``(env id, result)`` pairs) as a rich table."""
    rows = [r if isinstance(r, tuple) else ("", r) for r in results]
    with_env = any(env for env, _ in rows)
    table = Table(title=title)
    for col in (("env",) if with_env else ()) + ("policy", "mean return", "std", "episodes",
                                                  "parse errors"):
        table.add_column(col)
    for env, r in rows:
        table.add_row(*((env,) if with_env else ()), r.policy, f"{r.mean:.4f}", f"{r.std:.4f}",
                      str(r.episodes), f"{r.parse_error_rate:.1%}")
    console.print(table)


def markdown_table(rows: list[tuple[str, object]]) -> str:
    """``(env id, result)`` rows as a GitHub-flavoured markdown table."""
    lines = ["| env | policy | mean return | std | episodes | parse errors |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {env} | {r.policy} | {r.mean:.4f} | {r.std:.4f} | {r.episodes} | "
              f"{r.parse_error_rate:.1%} |" for env, r in rows]
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
