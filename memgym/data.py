"""Where datasets are found: ``MEMGYM_DATA_DIR``, then ``../shared/data``, then the user cache.

The user cache (``~/.cache/memgym/data`` or ``$XDG_CACHE_HOME/memgym/data``) is where a
dataset fetched from its official source would be stored after its pinned sha256 is checked;
memgym never downloads at import or env construction time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from memgym.errors import DataFormatError, DataNotFoundError

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dirs() -> list[Path]:
    """Candidate data directories, in search order."""
    dirs = []
    if env := os.environ.get("MEMGYM_DATA_DIR"):
        dirs.append(Path(env))
    dirs.append(_REPO_ROOT.parent / "shared" / "data")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    dirs.append(cache / "memgym" / "data")
    return dirs


def find_data_file(relative: str, sha256: str | None = None) -> Path:
    """Locate ``relative`` (e.g. ``"locomo/locomo10.json"``) in the first data dir holding it.

    Args:
        relative: Path inside a data directory.
        sha256: If given, the file's expected sha256 hex digest.

    Raises:
        DataNotFoundError: No candidate directory holds the file (lists those searched).
        DataFormatError: The file's sha256 differs from ``sha256``.
    """
    searched = data_dirs()
    for directory in searched:
        path = directory / relative
        if path.is_file():
            if sha256 is not None:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != sha256:
                    raise DataFormatError(f"{path}: expected sha256 {sha256}, got {digest}")
            return path
    listing = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(
        f"{relative} not found; searched {listing}. Set MEMGYM_DATA_DIR to a directory holding it.")
