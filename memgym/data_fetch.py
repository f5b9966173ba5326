"""Download registered data sets (:data:`memgym.data.DATASETS`) into ``$MEMGYM_CACHE/data``.

Each file streams from its public source, or from a mirror, into a temporary file beside its
destination while its sha256 is computed; only a file whose sha256 equals the pin is renamed
into place (atomically), so a failed or corrupted download leaves nothing behind.

A mirror is laid out like a data directory: ``MIRROR/<data set>/<file>``, i.e. the registry
path appended to the mirror's base URL (``http://host/data/locomo/locomo10.json`` for
``--mirror http://host/data``). ``python -m http.server -d DATA_DIR`` serves one; ``file://``
URLs work too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from memgym.data import DATASETS, DataFile, cache_dir, locate, sha256_of
from memgym.errors import ChecksumError, DataFetchError

_BLOCK = 1 << 16


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` did for one file: ``path`` holds it; ``downloaded`` is ``False``
    when a copy with the pinned sha256 was already in a data directory."""

    file: DataFile
    path: Path
    downloaded: bool


def source_url(file: DataFile, mirror: str | None = None) -> str:
    """Where ``file`` is downloaded from: its source URL, or ``MIRROR/<file.path>``."""
    return f"{mirror.rstrip('/')}/{file.path}" if mirror else file.url


def fetch(*names: str, mirror: str | None = None, console: Console | None = None,
          timeout: float = 60.0) -> list[Fetched]:
    """Download data sets ``names`` (``"all"``: every one) into ``$MEMGYM_CACHE/data``.

    A file already present with its pinned sha256 in any data directory is not downloaded
    again.

    Args:
        *names: Keys of :data:`memgym.data.DATASETS`, or ``"all"``.
        mirror: Base URL replacing the public sources (see the module docstring).
        console: Where the progress bar is drawn; ``None``: no progress bar.
        timeout: Seconds a connection may stay silent.

    Returns:
        One :class:`Fetched` per file, in registry order.

    Raises:
        DataFetchError: A name is unknown (checked before any download), or a download
            failed (network, HTTP status, disk); no file is left behind.
        ChecksumError: A download's sha256 differs from the pin; no file is left behind.
    """
    if unknown := [n for n in names if n != "all" and n not in DATASETS]:
        raise DataFetchError(f"unknown data set {', '.join(map(repr, unknown))}; expected "
                             f"'all' or one of {', '.join(DATASETS)}")
    files = [f for d in DATASETS.values() if {"all", d.name} & set(names) for f in d.files]
    out = []
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=console is None) as progress:
        for file in files:
            present = locate(file.path)
            if present is not None and sha256_of(present) == file.sha256:
                out.append(Fetched(file, present, False))
                continue
            dest = cache_dir() / "data" / file.path
            download(source_url(file, mirror), dest, file.sha256, progress, timeout)
            out.append(Fetched(file, dest, True))
    return out


def download(url: str, dest: Path, sha256: str, progress: Progress, timeout: float) -> None:
    """Stream ``url`` into ``dest`` if its bytes hash to ``sha256``; else leave no file.

    Raises:
        DataFetchError: The request or a write failed.
        ChecksumError: The sha256 of what arrived differs from ``sha256``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            size = int(resp.headers.get("Content-Length") or 0) or None
            task = progress.add_task(dest.name, total=size)
            while block := resp.read(_BLOCK):
                out.write(block)
                digest.update(block)
                progress.advance(task, len(block))
        if digest.hexdigest() != sha256:
            raise ChecksumError(f"{url}: expected sha256 {sha256}, got {digest.hexdigest()}; "
                                f"refused, nothing written to {dest.parent}")
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except OSError as exc:  # urllib's URLError / HTTPError and socket errors are OSErrors
        raise DataFetchError(f"could not download {url} to {dest}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
