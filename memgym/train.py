"""``memgym train``: evaluate baselines and the untrained policy, train with GRPO or PPO on
segments (full fine-tuning or LoRA via peft; gradient accumulation in the trainer's config),
evaluate again, and write ``run_dir/{trajectories.parquet, metrics.csv, tensorboard/,
reward_curve.png, kl.png, op_mix.png, checkpoint/, eval.json}``.

``metrics.csv`` (and TensorBoard) has per iteration the reward, its terms, the trainer's stats
(loss, KL, clip fraction, entropy, advantage statistics, gradient norm), the op mix and memory
metrics (``mem_*``, :func:`memgym.metrics.training_row`) and, every ``eval_every`` iterations,
the greedy validation return (``val_return_mean``). ``checkpoint/`` is written every
``checkpoint_every`` iterations and at the end: model (or adapter), tokenizer, trainer state
(optimizer, step), RNG states, the episode-seed generator, metrics and evaluation so far,
committed atomically with a manifest (:mod:`memgym.trainers.checkpoint`); with ``resume`` the
run continues from it and computes exactly what an uninterrupted run computes.

This module, :mod:`memgym.integrations` and the CLI are the application layer: the only parts of
``memgym`` that import from ``memgym.rollouts`` and ``memgym.trainers``.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
from rich.console import Console
from rich.table import Table

from memgym.batch import RolloutBatch
from memgym.config import LoraConfig, TrainConfig
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError
from memgym.metrics import OP_KINDS, rollout_diagnostics, training_row
from memgym.rollouts import LLMPolicy, Policy, run_episodes
from memgym.rollouts.hf import HFEngine, load_model
from memgym.trainers.checkpoint import (
    find_checkpoint,
    load_checkpoint_state,
    save_checkpoint,
    set_rng_state,
)
from memgym.trainers.grpo import GRPOTrainer
from memgym.trainers.ppo import PPOTrainer
from memgym.trajectory import (
    Trajectory,
    load_trajectories,
    trajectories_from_frame,
    write_trajectories,
)

EVAL_SEED_BASE = 1_000_000  # evaluation seeds never collide with training seeds
STEPS_FILE = "trajectories.parquet"


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


def _figure(metrics: pd.DataFrame, columns: dict[str, str], ylabel: str, path: Path,
            hlines: dict[str, tuple[float, str]] | None = None) -> None:
    """Line plot of ``metrics[column]`` over iterations (``columns``: column → legend label)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for column, label in columns.items():
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            ax.plot(rows["iteration"], rows[column], marker="o", label=label)
    for label, (value, style) in (hlines or {}).items():
        ax.axhline(value, linestyle=style, color="gray", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(metrics: pd.DataFrame, evals: dict, run_dir: Path) -> list[Path]:
    """``reward_curve.png`` (train reward, periodic val return, val before/after), ``kl.png``
    (KL to the reference and clip fraction) and ``op_mix.png`` (ops per step by kind).

    Returns:
        The paths written.
    """
    paths = [run_dir / "reward_curve.png", run_dir / "kl.png", run_dir / "op_mix.png"]
    hlines = {f"val {name}": (evals[name]["mean"], style)
              for name, style in (("untrained", "--"), ("trained", "-")) if name in evals}
    _figure(metrics, {"reward_mean": "train reward (mean)", "val_return_mean": "val return"},
            "episode return", paths[0], hlines)
    _figure(metrics, {"kl": "KL to reference", "clip_frac": "clip fraction"}, "per token",
            paths[1])
    _figure(metrics, {f"op_{kind}": kind for kind in OP_KINDS}, "ops per step", paths[2])
    return paths


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


def load_policy(config: TrainConfig, checkpoint: Path | None = None):
    """The policy to train, its tokenizer and the frozen KL reference (None when the algorithm
    has no KL term): ``config.model``, LoRA-wrapped if configured; from ``checkpoint`` when
    resuming (a full model directory, or the adapter of a LoRA run on top of ``config.model``)."""
    model, tokenizer = load_model(config.model)
    ref_model = copy.deepcopy(model).eval() if config.needs_reference() else None
    if checkpoint is None:
        return with_lora(model, config.lora), tokenizer, ref_model
    if config.lora is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, checkpoint, is_trainable=True), tokenizer, ref_model
    model, tokenizer = load_model(config.model.model_copy(update={"name_or_path": str(checkpoint)}))
    return model, tokenizer, ref_model


class MetricsLog:
    """Per-iteration rows to ``metrics.csv`` (rewritten each time, so it is always complete) and,
    optionally, each numeric value to TensorBoard as ``<prefix>/<name>`` (prefix: the name up to
    its first ``_``, e.g. ``reward/reward_mean``, ``op/op_add``)."""

    def __init__(self, run_dir: Path, rows: list[dict], tensorboard: bool) -> None:
        self.path, self.rows = run_dir / "metrics.csv", rows
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged past the checkpoint we resume from
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=len(rows))
        self.frame().to_csv(self.path, index=False)

    def frame(self) -> pd.DataFrame:
        """All rows so far (columns ``iteration``, ``reward_mean``, ... even when empty)."""
        return pd.DataFrame(self.rows) if self.rows else pd.DataFrame(
            columns=["iteration", "reward_mean"])

    def log(self, row: dict) -> None:
        """Append ``row`` (it has ``iteration``) and write it out."""
        self.rows.append(row)
        self.frame().to_csv(self.path, index=False)
        if self.writer is not None:
            for key, value in row.items():
                if key != "iteration" and isinstance(value, int | float) and np.isfinite(value):
                    self.writer.add_scalar(f"{key.split('_')[0]}/{key}", value, row["iteration"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def make_rollout(config: TrainConfig, engine: HFEngine, sampling: SamplingParams
                 ) -> Callable[[list[int], int], list[Trajectory]]:
    """The training rollout ``(seeds, sampling seed) -> trajectories`` that ``config.rollout``
    asks for: the local runner on ``engine``, or a :class:`RayRolloutRunner` whose engine actors
    receive the policy's current weights before every rollout (continuous batching there makes
    sampling depend on timing, so the sampling seed only applies locally)."""
    if config.rollout.ray_address is None:
        def run_local(seeds: list[int], seed: int) -> list[Trajectory]:
            policy = LLMPolicy(engine, replace(sampling, seed=seed), name="policy")
            return run_episodes(config.env_id, config.env, policy, seeds,
                                num_envs=config.num_envs)
        return run_local
    from memgym.rollouts.ray_actors import hf_policy
    from memgym.rollouts.ray_runner import RayRolloutRunner

    runner = RayRolloutRunner(config.env_id, config.env, partial(
        hf_policy, config.model.name_or_path, sampling, "policy", config.num_envs), config.rollout)

    def run_ray(seeds: list[int], seed: int) -> list[Trajectory]:
        runner.load_state_dict(engine.model.state_dict())
        return runner.run(seeds)
    return run_ray


RUN_FILES = (STEPS_FILE, "metrics.csv", "eval.json", "checkpoint", "checkpoint.old",
             "checkpoint.partial")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create ``run_dir``; a directory that already holds a run (any of :data:`RUN_FILES`) is
    continued only with ``resume`` and replaced (deleted first) only with ``overwrite``.

    Raises:
        ConfigError: ``run_dir`` holds a run and neither flag is set, or both are set.
    """
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: continue the run in "
                          f"{run_dir} or replace it, not both")
    held = [name for name in RUN_FILES if (run_dir / name).exists()]
    if held and not resume:
        if not overwrite:
            raise ConfigError(f"{run_dir} holds a run ({', '.join(held)}): pass --resume to "
                              "continue it or --overwrite to replace it, or choose another "
                              "run_dir")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def train(config: TrainConfig, console: Console | None = None) -> dict:
    """Run the whole pipeline described in the module docstring.

    With ``config.resume`` and a checkpoint in ``run_dir/checkpoint`` (or ``checkpoint.old``,
    which a save killed between its two renames leaves), the run continues from it: the
    baselines' evaluation, metrics and trajectories so far are kept, and every iteration after
    the checkpoint computes the same rollouts and loss as an uninterrupted run.

    Returns:
        The evaluation summary written to ``eval.json``.

    Raises:
        ConfigError: The checkpoint to resume from fails its manifest or does not fit the run.
    """
    console = console or Console()
    run_dir = Path(config.run_dir)
    prepare_run_dir(run_dir, config.resume, config.overwrite)
    checkpoint = run_dir / "checkpoint"
    # the committed checkpoint (checkpoint/, or checkpoint.old/ if a save died between its
    # renames), verified against its manifest before anything is built from it
    source = find_checkpoint(checkpoint) if config.resume else None
    state = None if source is None else load_checkpoint_state(source)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()

    model, tokenizer, ref_model = load_policy(config, source)
    engine = HFEngine(model, tokenizer, batch_size=config.num_envs)
    eval_kwargs = {**config.env, **config.eval_env}
    greedy = SamplingParams(max_new_tokens=config.sampling.max_new_tokens, temperature=0.0)
    trainer = (PPOTrainer(model, tokenizer.pad_token_id, config.ppo, ref_model)
               if config.algorithm == "ppo" else
               GRPOTrainer(model, tokenizer.pad_token_id, config.grpo, ref_model))
    sampling = SamplingParams(
        max_new_tokens=config.sampling.max_new_tokens, temperature=config.sampling.temperature,
        top_p=config.sampling.top_p)
    rng = np.random.default_rng(config.seed)  # episode and sampling seeds of the rollouts
    all_trajectories: list[Trajectory] = []

    def run_eval(label: str, policy: Policy | None = None) -> EvalResult:
        """Evaluate ``policy`` (default: the current LLM policy, greedy) as ``label``."""
        policy = policy or LLMPolicy(engine, greedy, name=label)
        result, trajs = evaluate(policy, config.env_id, eval_kwargs, config.eval_episodes,
                                 config.num_envs)
        result.policy = label
        all_trajectories.extend(trajs)
        return result

    if state is not None:
        try:
            trainer.load_state_dict(state["trainer"])
            rng.bit_generator.state = state["seed_rng"]
            before = [EvalResult(**r) for r in state["before"]]
            rows, first = list(state["rows"]), int(state["iteration"])
            kept = int(state["num_trajectories"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"checkpoint {source} does not fit this run: "
                              f"{type(error).__name__}: {error}") from error
        set_rng_state(state["rng"])
        if first > config.iterations:
            raise ConfigError(f"iterations must be >= the checkpoint's {first} to resume, got "
                              f"{config.iterations}")
        # the file may also hold the final evaluation of the run we resume: keep what preceded
        all_trajectories = trajectories_from_frame(load_trajectories(run_dir / STEPS_FILE))
        if len(all_trajectories) < kept:
            raise ConfigError(f"{run_dir / STEPS_FILE} holds {len(all_trajectories)} "
                              f"trajectories, checkpoint {source} expects at least {kept}")
        all_trajectories = all_trajectories[:kept]
        console.print(f"resuming {run_dir} from {source} at iteration {first} "
                      f"(step {trainer.global_step})")
    else:
        if config.resume:
            console.print(f"no checkpoint in {checkpoint}: starting from scratch")
        before = [run_eval(name, cls()) for name, cls in baselines(config.env_id).items()]
        before.append(run_eval("untrained"))
        rows, first = [], 0
    print_table(console, f"validation before training ({eval_kwargs})", before)

    def save(iteration: int) -> None:  # the trajectories so far are on disk already
        save_checkpoint(checkpoint, model, tokenizer, trainer.state_dict(),
                        {"iteration": iteration, "global_step": trainer.global_step,
                         "config": config.model_dump()},
                        {"iteration": iteration, "seed_rng": rng.bit_generator.state,
                         "num_trajectories": len(all_trajectories), "rows": log.rows,
                         "before": [r.__dict__ for r in before]})

    rollout = make_rollout(config, engine, sampling)
    log = MetricsLog(run_dir, rows, config.tensorboard)
    for iteration in range(first, config.iterations):
        tick = time.perf_counter()
        episode_seeds = rng.integers(0, 2**31 - 1, size=config.episodes_per_iteration)
        seeds = [int(s) for s in episode_seeds for _ in range(config.group_size)]
        trajs = rollout(seeds, int(rng.integers(2**31 - 1)))
        for traj in trajs:  # the weights that acted: after global_step updates
            traj.policy_version = trainer.global_step
        rollout_seconds = time.perf_counter() - tick
        # the trainer scores tokens at the temperature they were sampled at (logits / T)
        stats = trainer.step(RolloutBatch.from_rollouts(trajs, sampling))
        all_trajectories.extend(trajs)
        summary = summarize("policy", trajs)
        row = {"iteration": iteration, "reward_mean": summary.mean, "reward_std": summary.std,
               "parse_error_rate": summary.parse_error_rate, **stats, **training_row(trajs),
               **rollout_diagnostics(trajs, sampling.max_new_tokens, tokenizer.eos_token_id),
               "rollout_seconds": rollout_seconds, "seconds": time.perf_counter() - tick}
        for name in trajs[0].reward_terms:
            row[f"reward_{name}"] = float(np.mean([t.reward_terms[name] for t in trajs]))
        if config.eval_every and (iteration + 1) % config.eval_every == 0:
            val = run_eval(f"policy@{iteration}")
            row |= {"val_return_mean": val.mean, "val_parse_error_rate": val.parse_error_rate}
        log.log(row)
        write_trajectories(all_trajectories, run_dir / STEPS_FILE)  # on disk before the next
        console.print(f"iter {iteration}: reward {summary.mean:+.4f} parse errors "
                      f"{summary.parse_error_rate:.0%} loss {stats['loss']:+.4f} "
                      f"({row['seconds']:.1f}s)")
        done, every = iteration + 1, config.checkpoint_every
        if every and done % every == 0 and done < config.iterations:  # the last: saved below
            save(done)
    log.close()
    save(config.iterations)

    after = run_eval("trained")
    print_table(console, "validation after training", [*before, after])
    write_trajectories(all_trajectories, run_dir / STEPS_FILE)
    evals = {r.policy: r.__dict__ for r in [*before, after]}
    evals["wall_seconds"] = time.perf_counter() - started
    (run_dir / "eval.json").write_text(json.dumps(evals, indent=2))
    write_plots(log.frame(), evals, run_dir)
    console.print(f"wrote {run_dir} in {evals['wall_seconds']:.0f}s")
    return evals
