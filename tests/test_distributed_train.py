"""``memgym train`` on 2 processes (``torchrun``, gloo, CPU): each rank rolls out its share of
the batch, every rank trains on the whole gathered batch, rank 0 writes the run, and a sharded
checkpoint resumes. A tiny random-initialised Llama with SmolLM2's real tokenizer and chat
template keeps the run fast."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from memgym.trajectory import load_trajectories

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, smollm2) -> Path:
    """A 1-layer Llama over SmolLM2's vocabulary, saved with SmolLM2's tokenizer."""
    tokenizer = smollm2[1]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _torchrun(config: Path, *args: str) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "memgym", "train",
         str(config), *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _tiny_run(model: Path, run_dir: Path) -> dict:
    return {"run_dir": str(run_dir), "env_id": "memgym/SyntheticMemoryManager-v0",
            "env": {"split": "train", "num_keys": 1, "num_updates": 2, "interference": 0,
                    "num_questions": 1},
            "model": str(model), "iterations": 1, "episodes_per_iteration": 2,
            "group_size": 2, "num_envs": 2, "eval_episodes": 1, "checkpoint_every": 1,
            "tensorboard": False, "sampling": {"max_new_tokens": 8, "temperature": 1.0}}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_train_the_whole_batch_and_resume(tiny_model, tmp_path, strategy):
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**_tiny_run(tiny_model, run_dir),
                                      "distributed": {"strategy": strategy}}))
    done = _torchrun(config)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (run_dir / "checkpoint" / "sharded").is_dir()
    frame = load_trajectories(run_dir / "trajectories.parquet")
    trained = frame[frame["policy"] == "policy"]
    # the whole batch (2 episodes × group 2), rolled out half on each rank, in seed order
    assert trained["trajectory_id"].nunique() == 4
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 1
    resumed = _torchrun(config, "--resume", "--set", "iterations=2")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["iteration"].tolist() == [0, 1]
    assert metrics["rollout_staleness"].tolist() == [0, 0]


def test_memgym_train_on_a_running_ray_cluster(tiny_model, tmp_path):
    """``distributed.launcher: ray``: `memgym train` on a running cluster (``ray start``) starts
    2 Ray Train workers that form one gloo group and write one run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    temp = tempfile.mkdtemp(prefix="memgym-ray-")  # short: Ray's socket paths must fit
    ray = Path(sys.executable).with_name("ray")
    started = subprocess.run([str(ray), "start", "--head", "--num-cpus", "2",
                              "--object-store-memory", "100000000", "--temp-dir", temp,
                              "--include-dashboard", "false", "--node-ip-address",
                              "127.0.0.1"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        run_dir = tmp_path / "run"
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({**_tiny_run(tiny_model, run_dir), "distributed": {
            "strategy": "ddp", "launcher": "ray", "num_workers": 2}}))
        done = subprocess.run([sys.executable, "-m", "memgym", "train", str(config)],
                              env={**env, "RAY_ADDRESS": "auto"}, capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        frame = load_trajectories(run_dir / "trajectories.parquet")
        assert frame[frame["policy"] == "policy"]["trajectory_id"].nunique() == 4
        assert (run_dir / "checkpoint" / "sharded").is_dir()
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True, timeout=120)
