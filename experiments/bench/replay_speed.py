"""Replay speed on quickstart-like trajectories (LoCoMo memory manager, window 3, no LLM).

Generates ``--episodes`` episodes with each scripted baseline, writes them to a trajectory file,
loads it and times ``memgym.replay.replay`` (which verifies every field of every step) from a
cold start (tokenization and scoring caches cleared, envs built inside the timed call), then
again warm (the caches filled, as in a long replay). Prints steps/s of each run, by wall clock
and by process CPU time, and the best wall-clock rates.

    PYTHONPATH=. python experiments/bench/replay_speed.py --episodes 300 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from memgym import load_trajectories, write_trajectories
from memgym.envs import baselines
from memgym.replay import replay
from memgym.retrieval import _idf32, _terms, tokenize
from memgym.rollouts import run_episodes
from memgym.scoring import normalize_answer, token_f1

ENV_ID = "memgym/LoCoMoMemoryManager-v0"


def main() -> None:
    """Parse arguments, generate, replay, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300, help="episodes per baseline")
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tick = time.perf_counter()
    trajectories = []
    for name, cls in baselines(ENV_ID).items():
        trajectories += run_episodes(ENV_ID, {"window": args.window}, cls(),
                                     range(args.episodes), progress=False)
        print(f"generated {args.episodes} episodes of {name}")
    print(f"generation: {time.perf_counter() - tick:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        frame = load_trajectories(write_trajectories(trajectories, Path(tmp) / "t.parquet"))
    rates: dict[str, list[float]] = {"cold": [], "warm": []}
    for repeat in range(args.repeats):
        for cache in (tokenize, _terms, _idf32, normalize_answer, token_f1):
            cache.cache_clear()
        for state in ("cold", "warm"):  # warm: the same file again, caches filled
            cpu = time.process_time()
            report = replay(frame)
            cpu = time.process_time() - cpu
            if not report.ok:
                raise SystemExit(f"replay diverged: {report.divergences[0].describe()}")
            rates[state].append(report.steps_per_second)
            print(f"repeat {repeat} {state}: {report.trajectories} trajectories, {report.steps} "
                  f"steps in {report.seconds:.3f}s = {report.steps_per_second:,.0f} steps/s "
                  f"(CPU time {cpu:.3f}s = {report.steps / cpu:,.0f} steps/s)")
    print(f"best: cold {max(rates['cold']):,.0f} steps/s, warm {max(rates['warm']):,.0f} "
          f"steps/s (wall clock; the CPU-time rates are less sensitive to other processes)")

if __name__ == "__main__":
    main()
