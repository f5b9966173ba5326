"""Ray runner benchmarks, measured side by side in one run on a private local Ray instance.

1. Scaling on an env-bound workload: the store-all baseline (microseconds per action) on the
   LoCoMo memory manager wrapped in :class:`BusyEnv`, which adds ``--busy-ms`` of CPU work per
   step (process time, not a sleep). memgym's own env steps take ~1 ms here (BM25 is fast), so
   the wrapper stands in for an expensive env (code execution, a judge model). The same episodes
   run with 1 and with 2 env workers (same total envs), alternating, best of ``--repeats``.
2. Remote-call overhead per env step on the plain LoCoMo env: one EnvWorker actor steps
   ``--envs`` envs with a no-op action, one remote call per step vs one call per batch of
   ``--envs`` steps; the overhead is (remote wall - in-process env time) / steps.

    PYTHONPATH=. python experiments/bench/ray_rollouts.py --episodes 8 --window 16 --repeats 2

(run from the repository root: the env workers import this module to build ``BusyEnv``.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import gymnasium as gym
import ray

from memgym.config import RolloutConfig
from memgym.envs import baselines
from memgym.rollouts.ray_actors import EnvWorker
from memgym.rollouts.ray_runner import RayRolloutRunner, init_ray

ENV_ID = "memgym/LoCoMoMemoryManager-v0"
NOOP = '{"memory": []}'
BUSY_ID = "experiments.bench.ray_rollouts:BusyEnv-v0"  # gym.make imports the module first


class BusyEnv(gym.Wrapper):
    """``env_id`` plus ``busy_ms`` of CPU time burnt before each step (the bench's env cost)."""

    def __init__(self, env_id: str = ENV_ID, busy_ms: float = 20.0, **kwargs) -> None:
        super().__init__(gym.make(env_id, **kwargs))
        self.busy_ms = busy_ms

    def step(self, action):
        """Burn ``busy_ms`` of process CPU time, then step the wrapped env."""
        end = time.process_time() + self.busy_ms / 1e3
        while time.process_time() < end:
            pass
        return self.env.step(action)


gym.register("BusyEnv-v0", entry_point=BusyEnv)


def scaling(episodes: int, window: int, busy_ms: float, envs: int, repeats: int) -> None:
    """Wall time of the same rollout with 1 and 2 env workers."""
    policy = baselines(ENV_ID)["store-all"]
    seeds = list(range(episodes))
    kwargs = {"window": window, "busy_ms": busy_ms}
    runners = {n: RayRolloutRunner(BUSY_ID, kwargs, policy, RolloutConfig(
        env_workers=n, envs_per_worker=envs // n, max_batch=envs, engine_cpus=0.1))
        for n in (1, 2)}
    for runner in runners.values():
        runner.run(seeds[:envs], progress=False)  # warm: data loaded, caches filled
    best: dict[int, float] = {}
    for _ in range(repeats):
        for n, runner in runners.items():
            runner.run(seeds, progress=False)
            s = runner.stats
            best[n] = min(best.get(n, float("inf")), s.wall_seconds)
            print(f"  {n} worker(s): {s.wall_seconds:6.2f}s wall, {s.env_steps} steps, "
                  f"env {s.env_seconds:6.2f}s, policy {s.policy_seconds:5.2f}s, "
                  f"{s.env_calls} env calls, {s.engine_calls} engine calls")
    for runner in runners.values():
        runner.shutdown()
    print(f"scaling (LoCoMo window {window} + {busy_ms:g} ms CPU per step, store-all, "
          f"{episodes} episodes, {envs} envs): "
          f"1 worker {best[1]:.2f}s, 2 workers {best[2]:.2f}s -> speed-up "
          f"{best[1] / best[2]:.2f}x (target >= 1.6x)")


def call_overhead(envs: int, steps: int) -> None:
    """Per-step overhead of remote env steps with and without batching."""
    kwargs = {"window": min(steps + 1, 64)}  # no episode ends within the measured steps
    local = EnvWorker(ENV_ID, kwargs, envs)
    actor = ray.remote(EnvWorker).options(num_cpus=0.25).remote(ENV_ID, kwargs, envs)
    resets = [(slot, slot) for slot in range(envs)]
    local.run([], resets)
    ray.get(actor.run.remote([], resets))
    tick = time.perf_counter()
    env_seconds = sum(local.run([(slot, NOOP) for slot in range(envs)], [])[2]
                      for _ in range(steps))
    local_wall = time.perf_counter() - tick
    ray.get(actor.run.remote([], resets))
    tick = time.perf_counter()
    for _ in range(steps // 2):
        ray.get(actor.run.remote([(slot, NOOP) for slot in range(envs)], []))
    batched = time.perf_counter() - tick
    tick = time.perf_counter()
    for _ in range(steps // 2):
        for slot in range(envs):
            ray.get(actor.run.remote([(slot, NOOP)], []))
    single = time.perf_counter() - tick
    n = envs * steps // 2
    env_per_step = env_seconds / (envs * steps)
    loop = local_wall / (envs * steps)
    print(f"env step in-process: {1e3 * env_per_step:.3f} ms ({1e3 * loop:.3f} ms with the "
          f"worker loop)")
    per_single = single / n - env_per_step
    per_batched = batched / n - env_per_step
    print(f"remote-call overhead per env step: unbatched {1e3 * per_single:.3f} ms, batched x"
          f"{envs} {1e3 * per_batched:.3f} ms -> batching cuts it {per_single / per_batched:.1f}x")
    ray.kill(actor)


def main() -> None:
    """Parse arguments, start Ray, run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--busy-ms", type=float, default=20.0, help="CPU ms added per step")
    parser.add_argument("--envs", type=int, default=4, help="envs in all (even)")
    parser.add_argument("--steps", type=int, default=40, help="steps per env, overhead bench")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    init_ray(RolloutConfig(ray_address="local",
                           temp_dir=tempfile.mkdtemp(prefix="memgym-ray-bench-")))
    print(f"ray {ray.__version__}, {int(ray.cluster_resources()['CPU'])} CPUs")
    scaling(args.episodes, args.window, args.busy_ms, args.envs, args.repeats)
    call_overhead(args.envs, args.steps)
    ray.shutdown()


if __name__ == "__main__":
    main()
