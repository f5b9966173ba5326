"""``memgym train``: evaluate baselines and the untrained policy, train with GRPO on segments,
evaluate again, and write ``run_dir/{trajectories.parquet, metrics.csv, reward_curve.png,
checkpoint/, eval.json}``. ``metrics.csv`` has per iteration the reward, its terms, the trainer's
stats, the op mix and memory metrics (``mem_*``, :func:`memgym.metrics.training_row`).

This module and the CLI are the application layer: they are the only part of ``memgym`` that
imports from ``memgym.rollouts`` and ``memgym.trainers``.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from rich.console import Console
from rich.table import Table

from memgym.config import LoraConfig, TrainConfig
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.metrics import training_row
from memgym.rollouts import LLMPolicy, Policy, run_episodes
from memgym.rollouts.hf import HFEngine, load_model
from memgym.trainers.checkpoint import save_checkpoint
from memgym.trainers.grpo import GRPOTrainer, SegmentBatch
from memgym.trajectory import Trajectory, write_trajectories

EVAL_SEED_BASE = 1_000_000  # evaluation seeds never collide with training seeds


@dataclass
class EvalResult:
    """Mean episode return of a policy over ``episodes`` episodes (std: population std)."""

    policy: str
    mean: float
    std: float
    episodes: int
    parse_error_rate: float


def summarize(policy: str, trajectories: list[Trajectory]) -> EvalResult:
    """Return statistics and parse-error rate of a batch of trajectories."""
    returns = np.array([t.episode_return for t in trajectories])
    steps = [s for t in trajectories for s in t.steps]
    errors = sum(s.parse_error is not None for s in steps) / max(len(steps), 1)
    return EvalResult(policy, float(returns.mean()), float(returns.std()), len(returns), errors)


def evaluate(policy: Policy, env_id: str, env_kwargs: dict, episodes: int,
             num_envs: int) -> tuple[EvalResult, list[Trajectory]]:
    """Run ``episodes`` fixed-seed episodes (seeds ``EVAL_SEED_BASE + i``) and summarize them."""
    seeds = [EVAL_SEED_BASE + i for i in range(episodes)]
    trajectories = run_episodes(env_id, env_kwargs, policy, seeds, num_envs=num_envs)
    return summarize(policy.name, trajectories), trajectories


def _plot(metrics: pd.DataFrame, evals: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(metrics["iteration"], metrics["reward_mean"], marker="o", label="train reward (mean)")
    for name, style in (("untrained", "--"), ("trained", "-")):
        if name in evals:
            ax.axhline(evals[name]["mean"], linestyle=style, color="gray", label=f"val {name}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("episode return")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def with_lora(model, lora: LoraConfig | None):
    """Wrap ``model`` with peft LoRA adapters (only they train), or return it unchanged."""
    if lora is None:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    return get_peft_model(model, PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type="CAUSAL_LM"))


def print_table(console: Console, title: str,
                results: list[EvalResult] | list[tuple[str, EvalResult]]) -> None:
    """Print evaluation results (optionally ``(env id, result)`` pairs) as a rich table."""
    rows = [r if isinstance(r, tuple) else ("", r) for r in results]
    with_env = any(env for env, _ in rows)
    table = Table(title=title)
    for col in (("env",) if with_env else ()) + ("policy", "mean return", "std", "episodes",
                                                  "parse errors"):
        table.add_column(col)
    for env, r in rows:
        table.add_row(*((env,) if with_env else ()), r.policy, f"{r.mean:.4f}", f"{r.std:.4f}",
                      str(r.episodes), f"{r.parse_error_rate:.1%}")
    console.print(table)


def markdown_table(rows: list[tuple[str, EvalResult]]) -> str:
    """``(env id, result)`` rows as a GitHub-flavoured markdown table."""
    lines = ["| env | policy | mean return | std | episodes | parse errors |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {env} | {r.policy} | {r.mean:.4f} | {r.std:.4f} | {r.episodes} | "
              f"{r.parse_error_rate:.1%} |" for env, r in rows]
    return "\n".join(lines) + "\n"


def train(config: TrainConfig, console: Console | None = None) -> dict:
    """Run the whole pipeline described in the module docstring.

    Returns:
        The evaluation summary written to ``eval.json``.
    """
    console = console or Console()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()

    model, tokenizer = load_model(config.model)
    ref_model = copy.deepcopy(model).eval() if config.grpo.beta > 0 else None
    model = with_lora(model, config.lora)
    engine = HFEngine(model, tokenizer, batch_size=config.num_envs)
    eval_kwargs = {**config.env, **config.eval_env}
    greedy = SamplingParams(max_new_tokens=config.sampling.max_new_tokens, temperature=0.0)

    def run_eval(label: str, policy: Policy) -> EvalResult:
        result, trajs = evaluate(policy, config.env_id, eval_kwargs, config.eval_episodes,
                                 config.num_envs)
        result.policy = label
        all_trajectories.extend(trajs)
        return result

    all_trajectories: list[Trajectory] = []
    before = [run_eval(name, cls()) for name, cls in baselines(config.env_id).items()]
    before.append(run_eval("untrained", LLMPolicy(engine, greedy, name="untrained")))
    print_table(console, f"validation before training ({eval_kwargs})", before)

    trainer = GRPOTrainer(model, tokenizer.pad_token_id, config.grpo, ref_model)
    sampler = LLMPolicy(engine, SamplingParams(
        max_new_tokens=config.sampling.max_new_tokens, temperature=config.sampling.temperature,
        top_p=config.sampling.top_p, seed=config.seed), name="policy")
    rng = np.random.default_rng(config.seed)
    rows: list[dict] = []
    metrics = pd.DataFrame(columns=["iteration", "reward_mean"])
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    for iteration in range(config.iterations):
        tick = time.perf_counter()
        episode_seeds = rng.integers(0, 2**31 - 1, size=config.episodes_per_iteration)
        seeds = [int(s) for s in episode_seeds for _ in range(config.group_size)]
        trajs = run_episodes(config.env_id, config.env, sampler, seeds, num_envs=config.num_envs)
        rollout_seconds = time.perf_counter() - tick
        stats = trainer.step(SegmentBatch.from_trajectories(trajs, config.grpo, tokenizer))
        all_trajectories.extend(trajs)
        summary = summarize("policy", trajs)
        row = {"iteration": iteration, "reward_mean": summary.mean, "reward_std": summary.std,
               "parse_error_rate": summary.parse_error_rate, **stats, **training_row(trajs),
               "rollout_seconds": rollout_seconds, "seconds": time.perf_counter() - tick}
        for name in trajs[0].reward_terms:
            row[f"reward_{name}"] = float(np.mean([t.reward_terms[name] for t in trajs]))
        rows.append(row)
        metrics = pd.DataFrame(rows)
        metrics.to_csv(run_dir / "metrics.csv", index=False)
        console.print(f"iter {iteration}: reward {summary.mean:+.4f} parse errors "
                      f"{summary.parse_error_rate:.0%} loss {stats['loss']:+.4f} "
                      f"({row['seconds']:.1f}s)")

    after = run_eval("trained", LLMPolicy(engine, greedy, name="trained"))
    print_table(console, "validation after training", [*before, after])
    save_checkpoint(run_dir / "checkpoint", model, tokenizer, trainer.optimizer,
                    trainer.global_step, {"config": config.model_dump()})
    write_trajectories(all_trajectories, run_dir / "trajectories.parquet")
    evals = {r.policy: r.__dict__ for r in [*before, after]}
    evals["wall_seconds"] = time.perf_counter() - started
    (run_dir / "eval.json").write_text(json.dumps(evals, indent=2))
    _plot(metrics, evals, run_dir / "reward_curve.png")
    console.print(f"wrote {run_dir} in {evals['wall_seconds']:.0f}s")
    return evals
