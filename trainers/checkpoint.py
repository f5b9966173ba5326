"""Crash-safe checkpoints for exact resume, loaded without unpickling anything.

A checkpoint is a directory (``run_dir/checkpoint`` in ``memgym train``)::

    checkpoint/
        config.json, model.safetensors     the model (or adapter_config.json and
                                           adapter_model.safetensors of a LoRA run)
        tokenizer files                    save_pretrained
        optimizer.pt                       the trainer's state_dict(): tensors in plain
                                           containers, read with torch.load(weights_only=True)
        loop_state.json                    the loop's state and the python / numpy / torch RNG
                                           states, as plain JSON
        trainer_state.json                 a human-readable summary (never read back)
        manifest.json                      written last: format, iteration, and the size and
                                           sha256 of every other file

**Commit protocol.** A save writes everything into ``checkpoint.partial/`` beside the target
(fsyncing each file, the manifest last), then moves the committed ``checkpoint/`` aside to
``checkpoint.old/``, renames ``checkpoint.partial/`` to ``checkpoint/`` and removes
``checkpoint.old/``. Each rename is atomic, so whenever a save is killed a complete checkpoint
is on disk: ``checkpoint/``, or, between the two renames, ``checkpoint.old/``.
:func:`find_checkpoint` says which one to resume from; ``checkpoint.partial/`` is never read
(the next save removes it).

**Loading checks.** :func:`load_checkpoint_state` (and :func:`verify_checkpoint`) refuse, with
a :class:`~memgym.errors.ConfigError` naming the file and the problem, a directory without a
manifest (an older memgym's pickled checkpoint included), a file that is missing, not in the
manifest, of another size or another sha256 (a truncated, tampered or mixed checkpoint), and
state that does not parse. The error names the other complete checkpoint if there is one.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizer

from memgym.errors import ConfigError

FORMAT, VERSION = "memgym-checkpoint", 1
MANIFEST_FILE = "manifest.json"
STATE_FILE = "loop_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SUMMARY_FILE = "trainer_state.json"
PARTIAL, OLD = ".partial", ".old"  # suffixes of the staging and the backup directory
_CHUNK = 1 << 20


def rng_state() -> dict[str, Any]:
    """The global python, numpy and torch (CPU) RNG states, as JSON-serializable values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state().numpy().tobytes().hex()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state` (all of them, or none on an error).

    Raises:
        ConfigError: ``state`` is not what :func:`rng_state` returns.
    """
    try:
        version, internal, gauss = state["python"]
        python = (int(version), tuple(int(x) for x in internal),
                  None if gauss is None else float(gauss))
        n = state["numpy"]
        numpy = (str(n["name"]), np.array(n["keys"], dtype=np.uint32), int(n["pos"]),
                 int(n["has_gauss"]), float(n["cached_gaussian"]))
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray.fromhex(state["torch"]),
                                             dtype=torch.uint8))
        probe = random.Random()
        probe.setstate(python)
        np.random.RandomState().set_state(numpy)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as error:
        raise ConfigError(f"malformed RNG state in the checkpoint's {STATE_FILE}: "
                          f"{type(error).__name__}: {error}") from error
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(generator.get_state())


def save_checkpoint(directory: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizer,
                    trainer_state: dict[str, Any], summary: dict | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint and commit it to ``directory`` (see the module docstring).

    A peft model saves only its adapter (load it with ``peft.PeftModel.from_pretrained`` on the
    base model). Weights are saved as they are (fp32 safetensors), so a reload is bit-exact.
    Until the new checkpoint is committed, the previous one stays complete on disk.

    Args:
        directory: The checkpoint's path; its parent is created if missing.
        model: The policy.
        tokenizer: Its tokenizer.
        trainer_state: The trainer's ``state_dict()`` (optimizer states, global step): tensors
            and plain containers of numbers and strings, written to ``optimizer.pt``.
        summary: JSON-serializable summary for ``trainer_state.json`` (e.g. the run config).
        state: JSON-serializable state the loop needs to resume (numpy scalars and arrays are
            converted; the global RNG states of :func:`rng_state` are added under ``"rng"``);
            its ``"iteration"``, if any, is recorded in the manifest.

    Returns:
        ``directory``.

    Raises:
        ConfigError: ``state`` or ``summary`` holds a value JSON cannot represent.
    """
    partial = stage_checkpoint(directory)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    return commit_checkpoint(directory, trainer_state, summary, state)


def stage_checkpoint(directory: str | Path) -> Path:
    """Create the empty staging directory ``directory.partial`` (removing one a killed save
    left) for files that :func:`commit_checkpoint` then commits with the trainer and loop state.

    Returns:
        The staging directory.
    """
    target = Path(directory)
    partial = _sibling(target, PARTIAL)
    target.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():  # left by a save that was killed
        _remove(partial)
    partial.mkdir()
    return partial


def commit_checkpoint(directory: str | Path, trainer_state: dict[str, Any],
                      summary: dict | None = None, state: dict[str, Any] | None = None) -> Path:
    """Write the trainer and loop state into the staging directory of
    :func:`stage_checkpoint` (which holds the model's files), then its manifest, and commit it
    to ``directory`` by the protocol of the module docstring. Arguments as
    :func:`save_checkpoint`.

    Returns:
        ``directory``.

    Raises:
        ConfigError: ``state`` or ``summary`` holds a value JSON cannot represent.
    """
    target = Path(directory)
    partial, old = _sibling(target, PARTIAL), _sibling(target, OLD)
    loop = {**(state or {}), "rng": rng_state()}
    torch.save(trainer_state, partial / OPTIMIZER_FILE)
    _write_json(partial / STATE_FILE, loop)
    _write_json(partial / SUMMARY_FILE, summary or {})
    _write_manifest(partial, loop.get("iteration"))
    if target.exists():
        if old.exists():  # a backup whose removal was interrupted: ``target`` is newer
            _remove(old)
        _rename(target, old)
    _rename(partial, target)
    if old.exists():
        _remove(old)
    return target


def find_checkpoint(directory: str | Path) -> Path | None:
    """The committed checkpoint of ``directory`` by the commit protocol, without checking it:
    ``directory`` itself, else ``directory.old`` (a save was killed between its two renames),
    else None. ``directory.partial`` is never returned."""
    directory = Path(directory)
    for path in (directory, _sibling(directory, OLD)):
        if path.exists():
            return path
    return None


def verify_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Check ``directory`` against its manifest: the same files, sizes and sha256.

    Returns:
        The manifest (``format``, ``version``, ``iteration``, ``files``).

    Raises:
        ConfigError: The checkpoint is incomplete, tampered, mixed from two saves, or not a
            memgym checkpoint; the message names the other complete checkpoint if there is one.
    """
    directory = Path(directory)
    problem = _problem(directory)
    if problem is not None:
        raise ConfigError(f"checkpoint {directory} is not usable: {problem}; "
                          f"{_usable_instead(directory)}")
    return json.loads((directory / MANIFEST_FILE).read_text())


def load_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """Verify ``directory`` (:func:`verify_checkpoint`) and read what :func:`save_checkpoint`
    wrote besides the model and tokenizer. Nothing is unpickled.

    The RNG states are returned, not applied: restore them with :func:`set_rng_state` once the
    model is built (building it may draw random numbers).

    Returns:
        The loop state, with the trainer state under ``"trainer"`` (tensors on the CPU) and the
        RNG states under ``"rng"``.

    Raises:
        ConfigError: The checkpoint fails verification, or its state files do not parse.
    """
    directory = Path(directory)
    verify_checkpoint(directory)
    try:
        loop = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{directory / STATE_FILE} is not valid JSON: {error}") from error
    if not isinstance(loop, dict) or "rng" not in loop:
        raise ConfigError(f"{directory / STATE_FILE} holds no loop state (an object with 'rng')")
    try:
        trainer = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise ConfigError(f"{directory / OPTIMIZER_FILE} is not a trainer state that loads "
                          f"without unpickling code: {type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}") from error
    if not isinstance(trainer, dict):
        raise ConfigError(f"{directory / OPTIMIZER_FILE} holds a {type(trainer).__name__}, "
                          "not a trainer state dict")
    return {**loop, "trainer": trainer}


def _problem(directory: Path) -> str | None:
    """What makes ``directory`` unusable as a checkpoint, or None if it verifies."""
    if not directory.is_dir():
        return "it does not exist"
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        if (directory / "loop_state.pt").exists():
            return ("it was written by an older memgym (pickled loop_state.pt, which is never "
                    "loaded) and has no manifest.json")
        return f"{MANIFEST_FILE} is missing (an interrupted save, or not a memgym checkpoint)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        valid = (manifest["format"] == FORMAT and manifest["version"] == VERSION
                 and all(isinstance(e["size"], int) and isinstance(e["sha256"], str)
                         and _safe_name(name) for name, e in files.items()))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{MANIFEST_FILE} is malformed ({type(error).__name__}: {error})"
    if not valid:
        return f"{MANIFEST_FILE} is not a {FORMAT} v{VERSION} manifest of plain relative paths"
    for name in (STATE_FILE, OPTIMIZER_FILE):
        if name not in files:
            return f"{MANIFEST_FILE} does not list {name}"
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    missing, extra = sorted(set(files) - present), sorted(present - set(files) - {MANIFEST_FILE})
    if missing:
        return f"missing file(s): {', '.join(missing)}"
    if extra:
        return f"file(s) not in {MANIFEST_FILE} (from another save?): {', '.join(extra)}"
    for name, entry in sorted(files.items()):
        size = (directory / name).stat().st_size
        if size != entry["size"]:
            return (f"{name} has {size} bytes, {MANIFEST_FILE} says {entry['size']} "
                    "(truncated or replaced)")
        if _sha256(directory / name) != entry["sha256"]:
            return (f"{name} does not match its sha256 in {MANIFEST_FILE} (changed after the "
                    "save, or from another save)")
    return None


def _usable_instead(directory: Path) -> str:
    """A sentence naming the other committed checkpoint of ``directory``'s pair, if complete."""
    base = (directory.with_name(directory.name[:-len(OLD)])
            if directory.name.endswith(OLD) else directory)
    for other in (base, _sibling(base, OLD)):
        if other != directory and other.is_dir() and _problem(other) is None:
            manifest = json.loads((other / MANIFEST_FILE).read_text())
            return (f"the complete checkpoint {other} (iteration {manifest.get('iteration')}) "
                    f"is usable: move it to {base} to resume from it")
    return f"no other complete checkpoint is beside it (looked for {base} and {base}{OLD})"


def _safe_name(name: str) -> bool:
    """A relative path inside the checkpoint (no absolute path, no ``..``)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _sibling(directory: Path, suffix: str) -> Path:
    return directory.with_name(directory.name + suffix)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``json.dumps`` default: numpy scalars and arrays as python values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise ConfigError(f"checkpoint state holds a {type(value).__name__}, which JSON cannot hold")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, default=_plain), encoding="utf-8")


def _write_manifest(directory: Path, iteration: int | None) -> None:
    """fsync every file of ``directory``, then write its manifest (and fsync it too)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size,
                                                         "sha256": _sha256(path)}
    manifest = {"format": FORMAT, "version": VERSION, "iteration": iteration, "files": files}
    with (directory / MANIFEST_FILE).open("w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=1))
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)


def _rename(src: Path, dst: Path) -> None:
    """Atomically rename directory ``src`` to the absent ``dst`` and make it durable."""
    os.replace(src, dst)
    _fsync_dir(dst.parent)


def _remove(path: Path) -> None:
    shutil.rmtree(path)


def _fsync_dir(directory: Path) -> None:
    """Make renames and new entries in ``directory`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
