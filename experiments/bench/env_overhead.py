"""Env-step time as a share of rollout wall time with the real SmolLM2 (local runner).

Rolls out SmolLM2-135M-Instruct (greedy) on the LoCoMo memory manager with
:func:`memgym.rollouts.run_episodes`; the env is wrapped in :class:`TimedEnv` and the policy in
:class:`TimedPolicy`, so one run splits its wall time into env (``reset`` + ``step``),
generation and the rest (runner bookkeeping, segments). Target: env < 2 % of wall time.

    PYTHONPATH=. python experiments/bench/env_overhead.py --episodes 8 --window 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import gymnasium as gym
import torch

from memgym.engine import Completion, SamplingParams
from memgym.rollouts import LLMPolicy, run_episodes
from memgym.rollouts.hf import HFEngine

ENV_ID = "memgym/LoCoMoMemoryManager-v0"


class TimedEnv(gym.Wrapper):
    """Adds the wall time of every ``reset`` and ``step`` of the wrapped env to ``seconds``."""

    seconds = 0.0

    def __init__(self, env_id: str = ENV_ID, **kwargs) -> None:
        super().__init__(gym.make(env_id, **kwargs))

    def reset(self, **kwargs):
        """Timed ``reset``."""
        tick = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            TimedEnv.seconds += time.perf_counter() - tick

    def step(self, action):
        """Timed ``step``."""
        tick = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            TimedEnv.seconds += time.perf_counter() - tick


class TimedPolicy:
    """A policy whose ``act`` wall time is summed in ``seconds``."""

    def __init__(self, policy: LLMPolicy) -> None:
        self.policy, self.name, self.seconds = policy, policy.name, 0.0

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """Timed ``policy.act``."""
        tick = time.perf_counter()
        try:
            return self.policy.act(observations, infos)
        finally:
            self.seconds += time.perf_counter() - tick


gym.register("TimedEnv-v0", entry_point=TimedEnv)


def main() -> None:
    """Parse arguments, roll out, print the split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    engine = HFEngine.from_pretrained("smollm2", batch_size=args.num_envs)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    policy = TimedPolicy(LLMPolicy(engine, params, name="smollm2"))
    kwargs = {"window": args.window}
    run_episodes("TimedEnv-v0", kwargs, policy, [10_000], num_envs=1, progress=False)  # warm
    TimedEnv.seconds, policy.seconds = 0.0, 0.0
    tick = time.perf_counter()
    trajs = run_episodes("TimedEnv-v0", kwargs, policy, list(range(args.episodes)),
                         num_envs=args.num_envs, progress=False)
    wall = time.perf_counter() - tick
    steps = sum(len(t.steps) for t in trajs)
    tokens = sum(len(s.completion_ids) for t in trajs for s in t.steps)
    rest = wall - TimedEnv.seconds - policy.seconds
    print(f"torch threads {torch.get_num_threads()}; {args.episodes} episodes, {steps} steps, "
          f"{tokens} generated tokens, wall {wall:.2f}s")
    print(f"env {TimedEnv.seconds:.3f}s ({TimedEnv.seconds / wall:.2%} of wall, target < 2%), "
          f"generation {policy.seconds:.2f}s ({policy.seconds / wall:.1%}), runner and "
          f"segments {rest:.3f}s ({rest / wall:.2%})")


if __name__ == "__main__":
    main()
