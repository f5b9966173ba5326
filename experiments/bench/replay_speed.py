"""Replay speed on quickstart-like trajectories (LoCoMo memory manager, window 3, no LLM).

Generates ``--episodes`` episodes with each scripted baseline, writes them to a trajectory file,
loads it and times ``memgym.replay.replay`` (which verifies every field of every step) from a
cold start (tokenization and scoring caches cleared, envs built inside the timed call), then
again warm (the caches filled, as in a long replay), in one process and with ``--workers``
processes side by side. Prints steps/s of each run by wall clock (and, in one process, by
process CPU time) and the best wall-clock rates.

    PYTHONPATH=. python experiments/bench/replay_speed.py --episodes 2000 --repeats 3 --workers 2
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--episodes", type=int, default=2000, help="episodes per baseline")
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="processes of the parallel run")
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
    rates: dict[str, list[float]] = {}
    for repeat in range(args.repeats):
        for cache in (tokenize, _terms, _idf32, normalize_answer, token_f1):
            cache.cache_clear()
        for label, workers in (("cold", 1), ("warm", 1), (f"{args.workers} workers", args.workers)):
            cpu = time.process_time()
            report = replay(frame, workers=workers)
            cpu = time.process_time() - cpu
            if not report.ok:
                raise SystemExit(f"replay diverged: {report.divergences[0].describe()}")
            rates.setdefault(label, []).append(report.steps_per_second)
            cpu_rate = (f" (CPU time {cpu:.3f}s = {report.steps / cpu:,.0f} steps/s)"
                        if workers == 1 else "")
            print(f"repeat {repeat} {label}: {report.trajectories} trajectories, {report.steps} "
                  f"steps in {report.seconds:.3f}s = {report.steps_per_second:,.0f} steps/s"
                  f"{cpu_rate}")
    print("best (wall clock): " + ", ".join(f"{label} {max(r):,.0f} steps/s"
                                            for label, r in rates.items()))


if __name__ == "__main__":
    main()
