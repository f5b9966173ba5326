"""HF engine's CPU fast path: generation time against the packed prefill's token budget.

Greedy SmolLM2 generations for ``--prompts`` validation prompts of MemSifter (5 candidate
sessions: ~550 own tokens a prompt after the shared instructions), in one batch, once per
``--max-packed`` value (``HFEngine(max_packed=...)``), side by side in one process. Prints
seconds per value and the ratio to the first value.

    PYTHONPATH=. python experiments/bench/packed_prefill.py --max-packed 100000 4096 1024 512
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import memgym.envs  # noqa: F401  (registers the envs)
from memgym.engine import SamplingParams
from memgym.rollouts.hf import HFEngine, load_model

ENV_ID = "memgym/MemSifter-v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--max-packed", type=int, nargs="+", default=[100_000, 4096, 1024, 512])
    args = parser.parse_args()
    env = gym.make(ENV_ID, split="val", num_candidates=5).unwrapped
    prompts = []
    for seed in range(1_000_000, 1_000_000 + args.prompts):
        obs, info = env.reset(seed=seed)
        prompts.append(info.get("chat") or [{"role": "user", "content": obs}])
    model, tokenizer = load_model("smollm2")
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    first = None
    for budget in args.max_packed:
        engine = HFEngine(model, tokenizer, batch_size=args.prompts, max_packed=budget)
        start = time.perf_counter()
        engine.generate(prompts, params)
        seconds = time.perf_counter() - start
        first = first or seconds
        print(f"max_packed {budget:>7}: {seconds:6.1f} s ({first / seconds:.2f}x the first)")


if __name__ == "__main__":
    main()
