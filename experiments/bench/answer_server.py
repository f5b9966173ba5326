"""The frozen LLM answerer served vs unserved: engine calls and wall time of N envs ending together.

Runs ``--envs`` LoCoMo memory-manager episodes (``memgym/LoCoMoMemoryManager-v1``, ``--window``
turns, the scripted Mem0-like manager, so only the answerer generates) with all envs in lockstep,
so every episode ends on the same tick, under an LLM answer agent on SmolLM2 (greedy,
``--max-new-tokens``):

- ``unserved``: ``LLMAnswerer(engine)`` per env, envs stepped one after another (one engine call
  per episode);
- ``served``: ``answerer="served:bench"`` (an :class:`~memgym.envs.answer_server.AnswerServer`)
  with ``run_episodes(step_threads=N)``: the questions of the envs that end together go to the
  engine as one batch;
- ``served again``: the same rollout once more on the same server (every read a cache hit).

Prints engine calls, prompts generated and wall seconds of each side by side.

    PYTHONPATH=. python experiments/bench/answer_server.py --envs 4
"""

from __future__ import annotations

import argparse
import time

from memgym.engine import SamplingParams
from memgym.envs.answer_server import AnswerServer, register_reader
from memgym.envs.answerers import LLMAnswerer
from memgym.envs.memory_manager.baselines import Mem0LikePolicy
from memgym.rollouts import run_episodes
from memgym.rollouts.hf import HFEngine

ENV_ID = "memgym/LoCoMoMemoryManager-v1"


class Counting:
    """Counts the ``generate`` calls and prompts of an engine."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.calls, self.prompts = engine, engine.name, 0, 0

    def generate(self, prompts, params):
        self.calls, self.prompts = self.calls + 1, self.prompts + len(prompts)
        return self.engine.generate(prompts, params)


def rollout(counting: Counting, kwargs: dict, seeds: list[int], threads: int):
    """(engine calls, prompts generated, seconds, questions answered) of one rollout."""
    calls, prompts = counting.calls, counting.prompts
    tick = time.perf_counter()
    trajs = run_episodes(ENV_ID, kwargs, Mem0LikePolicy(), seeds, num_envs=len(seeds),
                         progress=False, step_threads=threads)
    seconds = time.perf_counter() - tick
    questions = sum(len(t.steps[-1].info["qa"]) for t in trajs)
    return counting.calls - calls, counting.prompts - prompts, seconds, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    counting = Counting(HFEngine.from_pretrained("smollm2", batch_size=64))
    seeds = list(range(100, 100 + args.envs))
    base = {"window": args.window, "split": args.split, "answer_top_k": args.top_k}
    counting.engine.generate([LLMAnswerer.prompt("Warm-up?", ())],  # first-call allocations
                             SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0))
    unserved = LLMAnswerer(counting, top_k=args.top_k, max_new_tokens=args.max_new_tokens)
    rows = [("unserved (1 thread)", rollout(counting, {**base, "answerer": unserved}, seeds, 1))]
    server = AnswerServer(counting, max_new_tokens=args.max_new_tokens,
                          batch_wait_timeout_s=1.0)
    register_reader("bench", server)
    served = {**base, "answerer": "served:bench"}
    rows.append((f"served ({args.envs} threads)", rollout(counting, served, seeds, args.envs)))
    rows.append(("served again (cached)", rollout(counting, served, seeds, args.envs)))
    print(f"{args.envs} envs ending together, window {args.window}, SmolLM2 greedy "
          f"{args.max_new_tokens} tokens, answer top-{args.top_k}")
    print(f"{'answerer':<24}{'questions':>10}{'engine calls':>14}{'prompts':>9}{'wall s':>9}")
    for name, (calls, prompts, seconds, questions) in rows:
        print(f"{name:<24}{questions:>10}{calls:>14}{prompts:>9}{seconds:>9.2f}")
    print(f"served/unserved wall: {rows[1][1][2] / rows[0][1][2]:.2f}; {server.stats()}")


if __name__ == "__main__":
    main()
