"""Data-parallel (DDP) and sharded (FSDP2) GRPO / PPO steps over a real gloo group of 2 CPU
processes (``torchrun``, :mod:`tests.distributed_worker`) against the same steps in one process;
sharded checkpoints: resume, resharding to one process, and refusing crafted files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memgym.config.trainer import GRPOConfig
from memgym.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(strategy: str, out: Path, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if processes == 1:
        command = [sys.executable, str(WORKER), strategy, str(out)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                   str(processes), "--master_addr", "127.0.0.1", "--master_port",
                   str(_free_port()), str(WORKER), strategy, str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out / "result.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The same steps in one plain process (no group, ``distributed=None``)."""
    return _run("none", tmp_path_factory.mktemp("none"), 1)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ddp")
    return _run("ddp", out, 2), out


@pytest.fixture(scope="module")
def fsdp2(tmp_path_factory) -> tuple[dict, Path]:
    from torch.distributed.fsdp import fully_shard  # noqa: F401  (skip if torch lacks FSDP2)

    out = tmp_path_factory.mktemp("fsdp2")
    return _run("fsdp2", out, 2), out


def _close(one: dict, two: dict, rel: float = 0.0) -> None:
    for name, value in one.items():
        if math.isnan(value):
            assert math.isnan(two[name]), name
        else:
            assert two[name] == pytest.approx(value, abs=1e-5, rel=rel), name


def _same_params(one: dict, two: dict, atol: float = 1e-5) -> None:
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=atol, rtol=0)


def _check(result: dict, reference: dict) -> None:
    assert result["world_size"] == 2
    for step in ("step1", "step2", "several"):  # loss, grad_norm, kl, clip_frac, ... all equal
        _close(reference[step], result[step])
        assert result[step]["grad_norm"] > 0.1  # the gradients are not trivially small
    for params in ("params1", "params2", "several_params"):
        _same_params(reference[params], result[params])
    # the steps moved the weights by much more than the tolerance
    assert max(float((reference["params1"][k] - reference["params2"][k]).abs().max())
               for k in reference["params1"]) > 1e-3
    # PPO's advantages and rewards are float32: equal to float32 rounding
    _close(reference["ppo"], result["ppo"], rel=1e-5)
    _same_params(reference["ppo_params"], result["ppo_params"])
    # a fresh trainer (other initial weights) resumed from the sharded checkpoint of step 1
    assert result["resumed_iteration"] == 1
    _close(result["step2"], result["resumed_step2"])
    assert result["resumed_step2"]["loss"] == pytest.approx(reference["step2"]["loss"],
                                                            abs=1e-5)
    _same_params(reference["params2"], result["resumed_params"])


@pytest.mark.slow
def test_ddp_step_equals_one_process(reference, ddp):
    result = ddp[0]
    assert not result["sharded"]
    _check(result, reference)


@pytest.mark.slow
def test_fsdp2_step_equals_one_process(reference, fsdp2):
    result, out = fsdp2
    assert result["sharded"]  # parameters are DTensor shards
    _check(result, reference)
    shards = sorted(p.name for p in (out / "checkpoint" / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own


def _one_process_trainer(seed: int):
    from memgym.trainers.grpo import GRPOTrainer

    from .tiny_models import tiny_llama

    config = GRPOConfig(micro_batch=2, learning_rate=0.05, max_grad_norm=0.5,
                        loss_agg_mode="seq-mean-token-mean")
    return GRPOTrainer(tiny_llama(12, seed=seed), 0, config)


@pytest.mark.slow
def test_sharded_checkpoint_resumes_in_one_process(reference, fsdp2, tmp_path):
    """DCP reshards on load: the 2-rank FSDP2 checkpoint of step 1 resumes in one process to
    the same second step."""
    from memgym.trainers.sharded_checkpoint import load_sharded_checkpoint

    from .distributed_worker import segment_batch

    trainer = _one_process_trainer(seed=7)
    loop = load_sharded_checkpoint(fsdp2[1] / "checkpoint", None, trainer)
    assert loop["iteration"] == 1 and trainer.global_step == 1
    _close(reference["step2"], trainer.step(segment_batch(2)))


def _rewrite_manifest(directory: Path) -> None:
    """What an attacker who can write the checkpoint does: a manifest that matches."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (directory / name).read_bytes()
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (directory / "manifest.json").write_text(json.dumps(manifest))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_crafted_sharded_checkpoint_runs_no_code(ddp, tmp_path):
    """A changed .metadata fails the manifest check; one whose manifest was rewritten to match
    is refused by the restricted unpickler before DCP unpickles it; nothing runs."""
    from memgym.trainers.sharded_checkpoint import load_sharded_checkpoint

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(ddp[1] / "checkpoint", checkpoint)
    marker = tmp_path / "pwned"
    (checkpoint / "sharded" / ".metadata").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ConfigError, match=r"sha256|bytes"):
        load_sharded_checkpoint(checkpoint, None, _one_process_trainer(seed=0))
    _rewrite_manifest(checkpoint)
    with pytest.raises(ConfigError, match=r"(posix|os)\.system"):
        load_sharded_checkpoint(checkpoint, None, _one_process_trainer(seed=0))
    assert not marker.exists()


def test_bad_strategy_and_backend_are_config_errors():
    from memgym.trainers.distributed import Distributed

    with pytest.raises(ConfigError, match="strategy"):
        Distributed("zero9")
    with pytest.raises(ConfigError, match="backend"):
        Distributed("ddp", backend="mpi")
    with pytest.raises(ConfigError, match="strategy"):
        Distributed("deepspeed")  # not offered: see Distributed's docstring


def _ray_train_fn(config: dict) -> None:
    """One Ray Train worker: builds its group as under torchrun and writes what it sees."""
    from memgym.trainers.distributed import Distributed

    dist = Distributed("ddp", backend="gloo", use_gpu=False)
    seen = dist.gather([dist.rank])
    Path(config["out"], f"rank{dist.rank}.json").write_text(
        json.dumps({"world_size": dist.world_size, "gathered": seen}))


@pytest.mark.slow
def test_run_on_ray_forms_one_group(tmp_path):
    ray = pytest.importorskip("ray")
    from memgym.trainers.distributed import run_on_ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    try:
        result = run_on_ray(_ray_train_fn, 2, config={"out": str(tmp_path)})
    finally:
        ray.shutdown()
    assert result.error is None
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen == {"world_size": 2, "gathered": [0, 1]}
