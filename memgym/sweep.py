"""``memgym eval --sweep KEY=V1,V2,...``: evaluate every policy at every value of one env option
on the same fixed seeds, then write one CSV and one PNG of the mean return (with its 95%
bootstrap interval) against the swept value.

The evaluation itself is ``memgym eval``'s, run once per value: each value gets its own table,
with the same seeds, bootstrap intervals and paired differences to the best heuristic as a
plain ``memgym eval -e KEY=VALUE``; scripted and LLM policies (a model directory or checkpoint)
alike. Length-extrapolation claims (MemAgent's RULER-HotpotQA out to 3.5M tokens, Mem-α past
400k) are such sweeps over a context-length option; MEM1's peak context
(``peak_context_tokens`` in ``info``) is reported beside the return where the env records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

from memgym.errors import ConfigError
from memgym.report import EvalResult

COLUMNS = ("env_id", "key", "value", "policy", "mean", "ci_low", "ci_high", "std", "episodes",
           "parse_error_rate", "paired_with", "paired_diff", "paired_diff_low",
           "paired_diff_high", "peak_context_tokens")
"""The CSV's columns, one row per env, value and policy (see :class:`EvalResult`)."""

LOG_X_SPAN = 10.0
"""Positive numeric values spanning more than this factor are drawn on a log-x axis."""


def parse_sweep(spec: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` as the key and its values, each read as YAML (``8000`` is an int,
    ``0.5`` a float, ``true`` a bool, ``locomo`` a string).

    Args:
        spec: The ``--sweep`` argument.

    Returns:
        ``(key, values)``, values in the order given.

    Raises:
        ConfigError: No ``=``, an empty key, no value, an empty or unparseable value, a value
            that is not a scalar (a list or mapping), or a value given twice.
    """
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise ConfigError(f"--sweep expects KEY=V1,V2,... (e.g. context_chars=8000,16000), "
                          f"got {spec!r}")
    values = []
    for raw in text.split(","):
        if not raw.strip():
            raise ConfigError(f"--sweep {key}: empty value in {text!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or exc  # the first line, without the marks
            raise ConfigError(f"--sweep {key}: cannot parse value {raw!r} as YAML: "
                              f"{reason}") from exc
        if isinstance(value, list | dict) or value is None:
            raise ConfigError(f"--sweep {key}: expected a number, string or bool per value, "
                              f"got {raw!r} ({type(value).__name__})")
        if value in values:
            raise ConfigError(f"--sweep {key}: value {value!r} is given twice")
        values.append(value)
    return key, values


def check_sweep(env_ids: Sequence[str], env_kwargs: dict, key: str, values: Sequence) -> None:
    """Build every env at every value once (``gymnasium.make``, then close) so that an option
    the env does not take, or a value it refuses, fails before any episode runs.

    Raises:
        ConfigError: ``key`` is also given as a fixed option, or an env does not take ``key``
            or refuses a value (the message names the env, the key and the value).
    """
    from memgym.replay import make_env

    if key in env_kwargs:
        raise ConfigError(f"--sweep {key} sets the option {key!r}; do not also pass "
                          f"-e {key}={env_kwargs[key]!r}")
    for env_id in env_ids:
        for value in values:
            try:
                make_env(env_id, {**env_kwargs, key: value}).close()
            except ConfigError as exc:
                raise ConfigError(f"--sweep {key}={value!r} on {env_id}: {exc}") from exc


def sweep_frame(key: str, tables: Sequence[tuple[object, Sequence[tuple[str, EvalResult]]]]
                ) -> pd.DataFrame:
    """The sweep's table from ``(value, rows)`` per value, ``rows`` being ``memgym eval``'s
    ``(env id, result)`` pairs at that value.

    Returns:
        One row per env, value and policy, with :data:`COLUMNS`; ``value`` as swept.
    """
    records = [{"env_id": env_id, "key": key, "value": value, **result.row()}
               for value, rows in tables for env_id, result in rows]
    return pd.DataFrame.from_records(records, columns=list(COLUMNS))


def _numeric(values: Sequence) -> bool:
    return all(isinstance(v, Real) and not isinstance(v, bool) for v in values)


def plot_sweep(frame: pd.DataFrame, path: Path) -> Figure:
    """One panel per env of mean return against the swept value, a line and a shaded 95%
    interval per policy; beside it the peak context in tokens where the env reports it.

    Numeric values are placed by value (log-x when all are positive and span more than
    :data:`LOG_X_SPAN`x); other values (e.g. source names) evenly, in the order swept.

    Returns:
        The figure written to ``path`` (PNG).
    """
    env_ids = list(dict.fromkeys(frame["env_id"]))
    peaks = frame["peak_context_tokens"].notna().any()
    fig = Figure(figsize=(7 * (1 + peaks), 4 * len(env_ids)))
    axes = fig.subplots(len(env_ids), 1 + peaks, squeeze=False)
    values = list(dict.fromkeys(frame["value"]))
    numeric = _numeric(values)
    position = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    log_x = numeric and min(values) > 0 and max(values) > LOG_X_SPAN * min(values)
    key = frame["key"].iloc[0]
    for row, env_id in zip(axes, env_ids, strict=True):
        rows = frame[frame["env_id"] == env_id]
        for i, (policy, group) in enumerate(rows.groupby("policy", sort=False)):
            x = [position[v] for v in group["value"]]
            row[0].plot(x, group["mean"], marker="o", color=f"C{i}", label=policy)
            row[0].fill_between(x, group["ci_low"], group["ci_high"], color=f"C{i}", alpha=0.2)
            if peaks and group["peak_context_tokens"].notna().any():
                row[1].plot(x, group["peak_context_tokens"], marker="o", color=f"C{i}",
                            label=policy)
        labels = [("mean return (95% CI)", env_id), ("peak context tokens (mean)", env_id)]
        for ax, (ylabel, title) in zip(row, labels, strict=False):
            ax.set_xlabel(key)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            if log_x:
                ax.set_xscale("log")
            ax.set_xticks([position[v] for v in values], [str(v) for v in values])
            ax.minorticks_off()
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def write_sweep(frame: pd.DataFrame, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.csv`` (the frame) and ``stem.png`` (:func:`plot_sweep`), creating the
    directory.

    Returns:
        The CSV and PNG paths.
    """
    csv, png = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".png")
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    plot_sweep(frame, png)
    return csv, png
