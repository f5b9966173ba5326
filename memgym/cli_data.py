"""``memgym data list`` and ``memgym data fetch NAME|all [--mirror URL]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memgym.data import DATASETS, cache_dir, data_dirs, locate, sha256_of

data_app = typer.Typer(help="Data sets memgym knows: list them, fetch them from their source.",
                       no_args_is_help=True)
console = Console()


def _status(path: str, sha256: str) -> str:
    found = locate(path)
    if found is None:
        return "missing"
    where = found.parents[len(Path(path).parts) - 1]  # the data dir
    return f"present in {where}" if sha256_of(found) == sha256 else f"BAD SHA256 in {where}"


@data_app.command(name="list")
def list_() -> None:
    """Every data set memgym knows: licence, and per file its sha256, status and source."""
    console.print(f"data dirs, in search order: {', '.join(str(d) for d in data_dirs())}",
                  markup=False, highlight=False, soft_wrap=True)
    for dataset in DATASETS.values():
        console.print(f"\n{dataset.name}: {dataset.description}; licence {dataset.licence}",
                      markup=False, highlight=False, soft_wrap=True)
        for file in dataset.files:
            console.print(f"  {file.path}: {_status(file.path, file.sha256)}\n"
                          f"    sha256 {file.sha256}\n    source {file.url}",
                          markup=False, highlight=False, soft_wrap=True)
    console.print(f"\n`memgym data fetch NAME|all` downloads into {cache_dir() / 'data'}",
                  markup=False, highlight=False, soft_wrap=True)


@data_app.command()
def fetch(names: Annotated[list[str], typer.Argument(
              help="Data sets of `memgym data list`, or all", metavar="NAME...")],
          mirror: Annotated[str | None, typer.Option(
              help="Base URL of a copy laid out as MIRROR/<data set>/<file>, used instead of "
                   "the public sources (http://, https:// or file://)")] = None) -> None:
    """Download data sets into $MEMGYM_CACHE/data; a file not matching its sha256 is refused."""
    from memgym.data_fetch import fetch as run_fetch

    for done in run_fetch(*names, mirror=mirror, console=console):
        verb = "downloaded to" if done.downloaded else "already present at"
        console.print(f"{done.file.path}: {verb} {done.path}", markup=False, highlight=False,
                      soft_wrap=True)
