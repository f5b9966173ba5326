"""``memgym learn``: train one config per env family and write the README's table of trained
rows beside the untrained policy and the best heuristic, from each run's ``eval.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from memgym.config import load_config
from memgym.errors import ConfigError
from memgym.report import EvalResult, markdown_table

START, END = "<!-- memgym-learn:start -->", "<!-- memgym-learn:end -->"
"""The markers of the README block :func:`write_block` replaces."""

ROWS = ("untrained", "warm start", "trained")
"""The run's own policies shown, with its best heuristic after ``untrained``."""


def run_config(config: Path, overrides: Sequence[str] = ()) -> None:
    """Train ``config`` afresh (``--overwrite``) in a child process, as ``memgym train`` would:
    each run's memory is the OS's to take back before the next one starts.

    Raises:
        subprocess.CalledProcessError: The run failed (its output is on the terminal).
    """
    sets = [arg for item in overrides for arg in ("--set", item)]
    subprocess.run([sys.executable, "-m", "memgym", "train", str(config), "--overwrite", *sets],
                   check=True)


def run_rows(config: Path, overrides: Sequence[str] = ()) -> list[tuple[str, EvalResult]]:
    """The table rows of the run ``config`` describes: ``(env id, result)`` for the untrained
    policy, the best heuristic (the reference of the paired differences, see
    :func:`memgym.report.pair_with_best_heuristic`), the warm start if any and the trained
    policy, read from the run directory's ``eval.json``.

    Raises:
        ConfigError: The config is invalid, the run has no ``eval.json``, or it lacks a
            trained row or a best heuristic.
    """
    parsed = load_config(config, list(overrides))
    path = Path(parsed.run_dir) / "eval.json"
    if not path.is_file():
        raise ConfigError(f"{config}: no {path}; train it first (memgym learn without "
                          "--table-only)")
    evals = {name: EvalResult(**row) for name, row in json.loads(path.read_text()).items()
             if isinstance(row, dict)}
    best = next((r.paired_with for r in evals.values() if r.paired_with), None)
    if "trained" not in evals or best not in evals:
        raise ConfigError(f"{path}: expected a 'trained' row and a best heuristic "
                          f"(paired_with), got rows {sorted(evals)}")
    names = [n for n in ROWS if n in evals]
    names.insert(1 if "untrained" in evals else 0, best)
    return [(parsed.env_id, evals[n]) for n in names]


def summary(rows: Sequence[tuple[str, EvalResult]]) -> str:
    """One sentence: how many env families' trained policy beats its best heuristic, i.e. the
    paired 95% interval of the difference lies above 0."""
    trained = [(env, r) for env, r in rows if r.policy == "trained"]
    beat = [env for env, r in trained if (r.paired_diff_low or 0.0) > 0]
    return (f"{len(beat)} of {len(trained)} env families beat their best heuristic (paired 95% "
            f"CI above 0){': ' + ', '.join(beat) if beat else ''}.\n")


def write_block(readme: Path, text: str) -> None:
    """Replace what lies between :data:`START` and :data:`END` in ``readme`` with ``text``.

    Raises:
        ConfigError: The file lacks either marker, or has them out of order.
    """
    content = readme.read_text()
    head, start, rest = content.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ConfigError(f"{readme}: expected the markers {START} and {END} (in that order) "
                          "around the table's place")
    readme.write_text(f"{head}{START}\n{text}{END}{tail}")


def learn(configs: Sequence[Path], readme: Path | None = None, train: bool = True,
          overrides: Sequence[str] = ()) -> list[tuple[str, EvalResult]]:
    """Train every config (unless ``train`` is False), then gather the rows and, with
    ``readme``, write the markdown table and :func:`summary` into its block.

    Returns:
        The ``(env id, result)`` rows, config by config.
    """
    if not configs:
        raise ConfigError("expected at least one config (e.g. experiments/learn/*.yaml)")
    for config in configs:
        load_config(config, list(overrides))  # every config is checked before any trains
    if train:
        for config in configs:
            run_config(config, overrides)
    rows = [row for config in configs for row in run_rows(config, overrides)]
    if readme is not None:
        write_block(readme, markdown_table(rows) + "\n" + summary(rows))
    return rows
