"""Fault injection (issue 20): what memgym does when a file is hostile or a process dies.

Each fault is one parametrized case, so a new one is a line or a small function:

- ``HOSTILE``: a pickled object (that would create a marker file) where memgym reads state;
  it must be refused with a ConfigError and never run.
- ``DAMAGE``: a change to a complete checkpoint (truncated, tampered, mixed, missing or extra
  file, no manifest); it must give a ConfigError naming the file and the problem.
- ``KILLS``: a SIGKILL at a point of a save, in a subprocess (:func:`_save_and_die`); the last
  complete checkpoint must stay loadable, the partial one ignored, and the next save clean up.
- A LoRA ``memgym train`` killed in the middle of a save and resumed in a fresh process
  computes what the uninterrupted run computed, bit for bit.

The checkpoints here hold a tiny random Llama (hidden 32, 2 layers) with SmolLM2's tokenizer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

import memgym.trainers.checkpoint as ckpt
from memgym.errors import ConfigError
from memgym.rollouts.hf import load_tokenizer
from memgym.trainers.checkpoint import (
    find_checkpoint,
    load_checkpoint_state,
    save_checkpoint,
    verify_checkpoint,
)
from memgym.trajectory import load_trajectories, trajectories_from_frame

ROOT = Path(__file__).resolve().parents[1]


def tiny_policy(shift: float = 0.0):
    """(model, tokenizer, trainer state): a seeded tiny Llama (every weight + ``shift``), SmolLM2's
    tokenizer and the state of an AdamW that took one step."""
    tokenizer = load_tokenizer("smollm2")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    return model, tokenizer, {"optimizer": optimizer.state_dict(), "global_step": 1}


def save(directory: Path, iteration: int, policy) -> Path:
    """``save_checkpoint`` of ``policy`` with a loop state like ``memgym train``'s."""
    model, tokenizer, trainer_state = policy
    state = {"iteration": iteration, "rows": [{"iteration": 0, "loss": 0.1, "kl": float("nan")}],
             "seed_rng": {"bit_generator": "PCG64", "state": {"state": 2**100, "inc": 3}}}
    return save_checkpoint(directory, model, tokenizer, trainer_state, {"iteration": iteration},
                           state)


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> Path:
    """A complete checkpoint of iteration 1 (copy it before changing it)."""
    return save(tmp_path_factory.mktemp("complete") / "checkpoint", 1, tiny_policy())


def rehash(directory: Path) -> None:
    """Rewrite the manifest to match the files, as a crafted checkpoint would."""
    if not (directory / "manifest.json").is_file():  # a checkpoint without one
        return
    manifest = json.loads((directory / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (directory / name).read_bytes()
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (directory / "manifest.json").write_text(json.dumps(manifest))


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for running any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _pickle(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# where a hostile pickle goes: file name, whether the manifest is rewritten to match it
HOSTILE = {
    "legacy loop_state.pt": ("loop_state.pt", False),
    "optimizer.pt, manifest rehashed": ("optimizer.pt", True),
    "loop_state.json, manifest rehashed": ("loop_state.json", True),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_pickled_object_in_the_state_is_refused_and_never_run(complete, tmp_path, case):
    name, crafted = HOSTILE[case]
    directory = shutil.copytree(complete, tmp_path / "checkpoint")
    marker = tmp_path / "pwned"
    (directory / name).write_bytes(_pickle({"optimizer": Payload(marker), "rng": Payload(marker),
                                            "global_step": 1}))
    if crafted:
        rehash(directory)
    try:
        with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
            load_checkpoint_state(directory)
    finally:
        assert not marker.exists(), "the pickled object ran"


def test_train_resume_refuses_a_pickled_loop_state_before_loading_anything(complete, tmp_path):
    run_dir = tmp_path / "run"
    directory = shutil.copytree(complete, run_dir / "checkpoint")
    marker = tmp_path / "pwned"
    (directory / "loop_state.pt").write_bytes(_pickle({"rng": Payload(marker)}))
    from memgym.train import train

    try:
        with pytest.raises(ConfigError, match=r"loop_state\.pt"):
            train(tiny_config(run_dir, resume=True))
    finally:
        assert not marker.exists(), "the pickled object ran"


def _truncate(directory: Path, name: str) -> None:
    data = (directory / name).read_bytes()
    (directory / name).write_bytes(data[:len(data) // 2])


def _flip(directory: Path, name: str) -> None:
    data = bytearray((directory / name).read_bytes())
    data[len(data) // 2] ^= 1
    (directory / name).write_bytes(bytes(data))


def _mix(directory: Path, name: str) -> None:
    """``name`` from another save (of iteration 2 with other weights)."""
    other = save(directory.parent / "other", 2, tiny_policy(shift=1.0))
    shutil.copy(other / name, directory / name)


# a change to a complete checkpoint -> the error it must give
DAMAGE = {
    "truncated optimizer.pt": (lambda d: _truncate(d, "optimizer.pt"),
                               r"optimizer\.pt has \d+ bytes, manifest\.json says \d+"),
    "truncated model": (lambda d: _truncate(d, "model.safetensors"), r"model\.safetensors has"),
    "flipped bit in the model": (lambda d: _flip(d, "model.safetensors"),
                                 r"model\.safetensors does not match its sha256"),
    "edited loop state": (lambda d: _flip(d, "loop_state.json"), r"loop_state\.json does not"),
    "model from another save": (lambda d: _mix(d, "model.safetensors"), r"model\.safetensors"),
    "loop state from another save": (lambda d: _mix(d, "loop_state.json"), r"loop_state\.json"),
    "missing optimizer.pt": (lambda d: (d / "optimizer.pt").unlink(),
                             r"missing file\(s\): optimizer\.pt"),
    "extra file": (lambda d: (d / "pytorch_model.bin").write_bytes(b"x"),
                   r"not in manifest\.json .*pytorch_model\.bin"),
    "no manifest": (lambda d: (d / "manifest.json").unlink(), r"manifest\.json is missing"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text("{"),
                          r"manifest\.json is malformed"),
    "manifest escapes the directory": (
        lambda d: (d / "manifest.json").write_text(json.dumps(
            {"format": "memgym-checkpoint", "version": 1, "iteration": 1,
             "files": {"../x": {"size": 1, "sha256": "0"}}})), r"plain relative paths"),
    "loop state not JSON, rehashed": (
        lambda d: ((d / "loop_state.json").write_text("{nan"), rehash(d)),
        r"loop_state\.json is not valid JSON"),
    "bad RNG state, rehashed": (
        lambda d: ((d / "loop_state.json").write_text('{"rng": {"python": 1}}'), rehash(d)),
        None),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_checkpoint_gives_a_typed_error_naming_the_problem(complete, tmp_path, case):
    damage, message = DAMAGE[case]
    directory = shutil.copytree(complete, tmp_path / "checkpoint")
    damage(directory)
    if message is None:  # the files verify; the state is refused when applied
        with pytest.raises(ConfigError, match="malformed RNG state"):
            ckpt.set_rng_state(load_checkpoint_state(directory)["rng"])
        return
    with pytest.raises(ConfigError, match=message) as error:
        load_checkpoint_state(directory)
    assert "\n" not in str(error.value)
    assert "no other complete checkpoint" in str(error.value) or "JSON" in str(error.value)


def test_the_error_names_the_complete_checkpoint_beside_a_damaged_one(complete, tmp_path):
    shutil.copytree(complete, tmp_path / "checkpoint.old")
    directory = shutil.copytree(complete, tmp_path / "checkpoint")
    _truncate(directory, "optimizer.pt")
    assert find_checkpoint(directory) == directory  # the committed one is never skipped
    with pytest.raises(ConfigError, match=r"checkpoint\.old \(iteration 1\) is usable: move it"):
        verify_checkpoint(directory)


def test_a_checkpoint_round_trips_exactly(complete):
    model, _, trainer_state = tiny_policy()
    state = load_checkpoint_state(complete)
    # plain state is plain JSON on disk (the torch RNG state as hex)
    on_disk = json.loads((complete / "loop_state.json").read_text())
    assert on_disk["rng"] == state["rng"] and isinstance(on_disk["rng"]["torch"], str)
    assert state["iteration"] == 1 and state["seed_rng"]["state"]["state"] == 2**100
    assert state["rows"][0]["loss"] == 0.1 and state["rows"][0]["kl"] != state["rows"][0]["kl"]
    saved, loaded = trainer_state["optimizer"], state["trainer"]["optimizer"]
    assert saved["param_groups"] == loaded["param_groups"]
    for index, moments in saved["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, loaded["state"][index][key]), (index, key)
    weights = load_file(complete / "model.safetensors")
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    # the global RNG states come back exactly
    ckpt.set_rng_state(state["rng"])
    first = (torch.rand(3), random.random())
    ckpt.set_rng_state(state["rng"])
    assert torch.equal(first[0], torch.rand(3)) and first[1] == random.random()


def _save_and_die(directory: str, kill_at: str) -> None:
    """Child process: commit a checkpoint of iteration 1, then SIGKILL this process at
    ``kill_at`` during the save of iteration 2 (other weights)."""
    save(Path(directory), 1, tiny_policy())
    policy = tiny_policy(shift=1.0)

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if kill_at == "writing optimizer.pt":
        real_save = torch.save

        def half_save(obj, path):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            data = buffer.getvalue()
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()
        ckpt.torch.save = half_save
    elif kill_at == "before the manifest":
        ckpt._write_manifest = lambda *args: die()
    else:  # "rename NAME" / "remove NAME": before that step of the commit
        step, name = kill_at.split(" ")
        real = {"rename": ckpt._rename, "remove": ckpt._remove}[step]

        def dying(path, *args):
            if path.name == name:
                die()
            real(path, *args)
        setattr(ckpt, f"_{step}", dying)
    save(Path(directory), 2, policy)


# kill point -> (what the kill leaves, the iteration of the checkpoint resume must use)
KILLS = {
    "writing optimizer.pt": (["checkpoint", "checkpoint.partial"], 1),
    "before the manifest": (["checkpoint", "checkpoint.partial"], 1),
    # the new one is complete in .partial, the old one not moved aside yet
    "rename checkpoint": (["checkpoint", "checkpoint.partial"], 1),
    # between the two renames: only .old is committed
    "rename checkpoint.partial": (["checkpoint.old", "checkpoint.partial"], 1),
    # the new one is committed, .old is a leftover
    "remove checkpoint.old": (["checkpoint", "checkpoint.old"], 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILLS)
def test_a_sigkill_during_a_save_leaves_the_last_complete_checkpoint(tmp_path, kill_at):
    directory = tmp_path / "checkpoint"
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_checkpoint_faults import "
         "_save_and_die; _save_and_die(*sys.argv[1:])", str(directory), kill_at],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    left, iteration = KILLS[kill_at]
    assert sorted(p.name for p in tmp_path.iterdir()) == left

    source = find_checkpoint(directory)
    assert load_checkpoint_state(source)["iteration"] == iteration
    expected = tiny_policy(shift=0.0 if iteration == 1 else 1.0)[0]
    reloaded = LlamaForCausalLM.from_pretrained(source)
    assert all(torch.equal(p, q) for p, q in zip(expected.parameters(), reloaded.parameters(),
                                                  strict=True))
    partial = tmp_path / "checkpoint.partial"
    if kill_at in ("writing optimizer.pt", "before the manifest"):
        with pytest.raises(ConfigError, match="not usable"):
            verify_checkpoint(partial)

    save(directory, 3, tiny_policy())  # the next save commits and clears what the kill left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert load_checkpoint_state(directory)["iteration"] == 3


def tiny_config(run_dir: Path, **overrides):
    """The TINY run of ``tests/test_train_loop.py`` in ``run_dir``."""
    from memgym.config import TrainConfig

    from .test_train_loop import TINY

    return TrainConfig(**{**TINY, "run_dir": str(run_dir), **overrides})


# child process of the LoRA test: ``memgym train CONFIG``, SIGKILLed as it commits its second
# checkpoint (the final one, complete in checkpoint.partial; the first is in checkpoint.old)
KILL_AT_SECOND_COMMIT = """
import os, signal, sys
import memgym.trainers.checkpoint as ckpt
from memgym.cli import main

real, commits = ckpt._rename, []
def rename(src, dst):
    if src.name == "checkpoint.partial":
        commits.append(src)
        if len(commits) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
ckpt._rename = rename
main()
"""


def _memgym(*args: str, script: str = "from memgym.cli import main; main()"):
    """Run the memgym CLI in a fresh python process (wide output: no wrapped lines)."""
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800, env={**os.environ, "COLUMNS": "500"})


@pytest.mark.slow
def test_a_lora_run_killed_mid_save_resumes_exactly_in_a_fresh_process(tmp_path):
    from .conftest import episode_view
    from .test_train_loop import TIMING, TINY

    run_dir, config = tmp_path / "run", tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TINY, "run_dir": str(run_dir), "iterations": 2,
                                      "checkpoint_every": 1, "eval_every": 0,
                                      "lora": {"r": 4, "alpha": 8}}))
    killed = _memgym("train", str(config), script=KILL_AT_SECOND_COMMIT)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert sorted(p.name for p in run_dir.glob("checkpoint*")) == ["checkpoint.old",
                                                                   "checkpoint.partial"]
    # what the uninterrupted run computed: both iterations' metrics and rollouts, and the
    # adapter and optimizer after its second step (complete, never committed)
    straight = pd.read_csv(run_dir / "metrics.csv")
    straight_rollouts = load_trajectories(run_dir / "trajectories.parquet")
    reference = shutil.copytree(run_dir / "checkpoint.partial", tmp_path / "reference")
    assert verify_checkpoint(reference)["iteration"] == 2

    resumed = _memgym("train", str(config), "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"from {run_dir}/checkpoint.old at iteration 1 (step 1)" in resumed.stdout

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics["iteration"]) == [0, 1]
    columns = [c for c in straight.columns if c not in TIMING]
    pd.testing.assert_frame_equal(straight[columns], metrics[columns], check_exact=True)
    # iteration 0 moved the adapter, so iteration 1 depends on the restored adapter
    assert straight["grad_norm"].iloc[0] > 0 and straight["reward_std"].iloc[0] > 0
    def training_rollouts(frame: pd.DataFrame) -> list:
        return [episode_view(t) for t in trajectories_from_frame(frame[frame.policy == "policy"])]
    rollouts = load_trajectories(run_dir / "trajectories.parquet")
    assert training_rollouts(rollouts) == training_rollouts(straight_rollouts)

    # the step after the checkpoint used the restored Adam moments: same adapter and optimizer
    assert sorted(p.name for p in run_dir.glob("checkpoint*")) == ["checkpoint"]
    a = load_file(reference / "adapter_model.safetensors")
    b = load_file(run_dir / "checkpoint" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    want = load_checkpoint_state(reference)["trainer"]["optimizer"]
    got = load_checkpoint_state(run_dir / "checkpoint")["trainer"]["optimizer"]
    assert want["state"].keys() == got["state"].keys() and want["state"]
    for index, moments in want["state"].items():
        assert all(torch.equal(v, got["state"][index][k]) for k, v in moments.items()), index
