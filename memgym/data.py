"""The data sets memgym knows, and where their files are found.

:data:`DATASETS` is the one registry: per data set its files (path inside a data directory,
pinned sha256, public source URL) and licence. Every loader reads its file through
:func:`find_data_file`, which checks the registry's pin, so a hash lives only here.

Search order (:func:`data_dirs`): ``$MEMGYM_DATA_DIR``, then ``../shared/data`` beside the
checkout (skipped when ``MEMGYM_NO_SHARED=1``, e.g. to try memgym as a clone without it), then
``$MEMGYM_CACHE/data``, where ``memgym data fetch NAME`` puts what it downloads
(:mod:`memgym.data_fetch`). memgym never downloads at import or env construction time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from memgym.errors import ChecksumError, DataNotFoundError

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


@dataclass(frozen=True)
class DataFile:
    """One file of a data set.

    Attributes:
        path: Path inside a data directory, ``"<data set>/<file>"`` (also its path on a mirror).
        sha256: Pinned sha256 hex digest of the file's bytes.
        url: Public source (a commit-pinned raw GitHub URL).
    """

    path: str
    sha256: str
    url: str


@dataclass(frozen=True)
class Dataset:
    """A data set: ``name`` (also its directory), what it is, its licence and files."""

    name: str
    description: str
    licence: str
    files: tuple[DataFile, ...]


_LOCOMO = ("snap-research/LoCoMo", "3eb6f2c585f5e1699204e3c3bdf7adc5c28cb376")
_LITM = ("nelson-liu/lost-in-the-middle", "29b8a6d042ce29abccee3db1a73171a107d7e6af")

# Sources and licences as in each data set's SOURCE.md (../shared/data/*/SOURCE.md); every pin
# was checked against the file at the URL's commit.
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("locomo", "LoCoMo locomo10.json (Maharana et al., ACL 2024) and MSC personas",
            "CC BY-NC 4.0 (non-commercial)", (
                DataFile("locomo/locomo10.json",
                         "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4",
                         _github(*_LOCOMO, "data/locomo10.json")),
                DataFile("locomo/msc_personas_all.json",
                         "75440be006945f5e92141f2374becd551a17a4a98ccd982d1d06c821b40c7dc7",
                         _github(*_LOCOMO, "data/msc_personas_all.json")))),
    Dataset("hotpotqa", "HotpotQA dev, 500 questions, distractor setting (IRCoT format)",
            "CC BY-SA 4.0", (
                DataFile("hotpotqa/hotpotqa_dev_distractor_ircot500.jsonl",
                         "837a919903fedf521211c4271f168ad5458488198e9c4d967bf5f3a579525ce8",
                         _github("xindili-cmu/anlp-project-multihop",
                                 "11ba72982918286f4bc602fb0cd87b5e2a145860",
                                 "processed_data/hotpotqa/dev_subsampled.jsonl")),)),
    Dataset("squad_v2", "SQuAD 2.0 dev, 16 articles (CS224N half)", "CC BY-SA 4.0", (
        DataFile("squad_v2/squad_v2_dev_cs224n_half.json",
                 "e67e5969b6dc6c1642154740806b79263b77fc048c7c11ee60d534eb48ef81e8",
                 _github("chrischute/squad", "4f2fd9fcd60b21e1f5fb32ac70dc50f867705de0",
                         "data/dev-v2.0.json")),)),
    Dataset("lost_in_the_middle", "NQ-Open with gold passage; 75-key KV retrieval",
            "MIT (NQ / Wikipedia text: CC BY-SA)", (
                DataFile("lost_in_the_middle/nq-open-oracle.jsonl.gz",
                         "6a7f72b846f663a133ef952244e5a4e43f06bcf190afe34e8fbe687ce0d1653e",
                         _github(*_LITM, "qa_data/nq-open-oracle.jsonl.gz")),
                DataFile("lost_in_the_middle/kv-retrieval-75_keys.jsonl.gz",
                         "eb6d61fc3473349f2b86df76757c6ab659cc929d907d24caf1c69928e03f6203",
                         _github(*_LITM, "kv_retrieval_data/kv-retrieval-75_keys.jsonl.gz")))),
    Dataset("longmemeval_sample",
            "3 LongMemEval_S haystacks with third-party questions (smoke test, not the benchmark)",
            "MIT", (
                DataFile("longmemeval_sample/longmemeval_s_3haystacks_thirdparty_qa.json",
                         "bf58e06035eafe81eab6d28c9c0e6f64152d12dc2c38e7dfe3d05a1cdad30d93",
                         _github("MuhammadNoor7/Parallel-Hybrid-Retrieval-Enhancing-Temporal-"
                                 "RAG-via-Concurrent-Graphiti-and-Semantic-Search",
                                 "3d2d10e2ca2194bb4507c57aeca6723e2f7f6d70",
                                 "data/longmemeval_s.json")),)),
)}
_FILES: dict[str, tuple[Dataset, DataFile]] = {
    f.path: (d, f) for d in DATASETS.values() for f in d.files}


def cache_dir() -> Path:
    """memgym's user cache: ``$MEMGYM_CACHE``, else ``$XDG_CACHE_HOME/memgym``, else
    ``~/.cache/memgym`` (fetched data in ``data/``, converted models in ``models/``)."""
    if env := os.environ.get("MEMGYM_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memgym"


def data_dirs() -> list[Path]:
    """Candidate data directories, in search order (see the module docstring)."""
    dirs = []
    if env := os.environ.get("MEMGYM_DATA_DIR"):
        dirs.append(Path(env))
    if os.environ.get("MEMGYM_NO_SHARED") != "1":
        dirs.append(_REPO_ROOT.parent / "shared" / "data")
    dirs.append(cache_dir() / "data")
    return dirs


def sha256_of(path: Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def dataset_of(relative: str) -> Dataset | None:
    """The registered data set holding file ``relative``, or ``None``."""
    entry = _FILES.get(relative)
    return entry[0] if entry else None


def locate(relative: str) -> Path | None:
    """The file ``relative`` in the first data directory holding it (unchecked), or ``None``."""
    return next((p for d in data_dirs() if (p := d / relative).is_file()), None)


def find_data_file(relative: str, sha256: str | None = None, how: str | None = None) -> Path:
    """Locate ``relative`` (e.g. ``"locomo/locomo10.json"``) in the first data dir holding it.

    A file of the registry (:data:`DATASETS`) is checked against its pinned sha256.

    Args:
        relative: Path inside a data directory.
        sha256: Expected sha256 hex digest of a file the registry does not know (e.g. a
            user's own copy of a full benchmark); ignored for registered files.
        how: How to get a file the registry does not know, for the error message (e.g. where
            to download it and where to save it); ignored for registered files.

    Raises:
        DataNotFoundError: No candidate directory holds the file (lists those searched and,
            for a registered file, the ``memgym data fetch NAME`` that gets it, else ``how``).
        ChecksumError: The file's sha256 differs from the pin.
    """
    dataset, entry = _FILES.get(relative, (None, None))
    path = locate(relative)
    if path is None:
        listing = ", ".join(str(d) for d in data_dirs())
        how = (f"run `memgym data fetch {dataset.name}` to download it ({dataset.licence})"
               if dataset else how or "set MEMGYM_DATA_DIR to a directory holding it")
        raise DataNotFoundError(f"{relative} not found; searched {listing}. To get it, {how}.",
                                relative=relative, dataset=dataset.name if dataset else None)
    expected = entry.sha256 if entry else sha256
    if expected is not None and (digest := sha256_of(path)) != expected:
        fix = f"; `memgym data fetch {dataset.name}` downloads a good copy" if dataset else ""
        raise ChecksumError(f"{path}: expected sha256 {expected}, got {digest}{fix}")
    return path
