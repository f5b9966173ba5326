"""``memgym train``: evaluate baselines and the untrained policy, train with GRPO or PPO on
segments (full fine-tuning or LoRA via peft; gradient accumulation in the trainer's config),
evaluate again, and write ``run_dir/{trajectories.parquet, metrics.csv, tensorboard/,
reward_curve.png, kl.png, op_mix.png, checkpoint/, eval.json}``. ``trajectories.parquet`` is a
Parquet dataset (directory) that every evaluation and iteration appends one file to
(:class:`~memgym.trajectory_log.TrajectoryLog`): a write costs the new rows only.

``metrics.csv`` (and TensorBoard) has per iteration the reward, its terms, the trainer's stats
(loss, KL, clip fraction, entropy, advantage statistics, gradient norm), the op mix and memory
metrics (``mem_*``, :func:`memgym.metrics.training_row`) and, every ``eval_every`` iterations,
the greedy validation return (``val_return_mean``). ``checkpoint/`` is written every
``checkpoint_every`` iterations and at the end: model (or adapter), tokenizer, trainer state
(optimizer, step), RNG states, the episode-seed generator, metrics and evaluation so far,
committed atomically with a manifest (:mod:`memgym.trainers.checkpoint`); with ``resume`` the
run continues from it and computes exactly what an uninterrupted run computes.

With ``reader:`` a frozen LLM answer agent is served to the envs that name it
(``answerer: served:<name>``, :mod:`memgym.reader`) for the whole run: rollouts, warm start and
evaluations step their envs on ``reader.step_threads`` threads so that the questions of envs
ending together go to it as one batch; ``metrics.csv`` gets its counters per iteration
(``reader_requests``, ``reader_hits``, ``reader_generated``, ``reader_engine_calls``, ...).

With ``warm_start:`` the policy is fine-tuned (SFT) on a scripted teacher's rollouts after the
``untrained`` evaluation and evaluated again as ``warm start`` before RL
(:mod:`memgym.trainers.warm_start`; the model is saved to ``run_dir/warm_start/``).

``eval.json`` maps each policy evaluated on the validation seeds (the env's baselines,
``untrained``, ``warm start``, ``trained``) to :meth:`memgym.report.EvalResult.row`: mean
return with its 95% bootstrap interval (``ci_low`` / ``ci_high``), episodes, parse-error rate
and the paired difference to the best heuristic on the same seeds (``paired_with``,
``paired_diff``, ``paired_diff_low`` / ``paired_diff_high``;
:func:`memgym.report.pair_with_best_heuristic`); and ``wall_seconds``.

This module, :mod:`memgym.integrations` and the CLI are the application layer: the only parts of
``memgym`` that import from ``memgym.rollouts`` and ``memgym.trainers``.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from memgym.batch import RolloutBatch
from memgym.config import LoraConfig, TrainConfig
from memgym.engine import SamplingParams
from memgym.envs import baselines
from memgym.errors import ConfigError, RolloutError
from memgym.metrics import rollout_diagnostics, training_row
from memgym.reader import ServedReader, check_readers
from memgym.report import (
    EvalResult,
    MetricsLog,
    pair_with_best_heuristic,
    print_table,
    summarize,
    write_plots,
)
from memgym.rollouts import LLMPolicy, Policy, TokenizedPolicy, run_episodes
from memgym.rollouts.hf import HFEngine, load_model
from memgym.rollouts.pipeline import TrainingRollouts
from memgym.trainers.checkpoint import (
    find_checkpoint,
    load_checkpoint_state,
    save_checkpoint,
    set_rng_state,
)
from memgym.trainers.grpo import GRPOTrainer
from memgym.trainers.ppo import PPOTrainer
from memgym.trainers.sharded_checkpoint import save_sharded_checkpoint
from memgym.trajectory import Trajectory
from memgym.trajectory_log import TrajectoryLog

EVAL_SEED_BASE = 1_000_000  # evaluation seeds never collide with training seeds
STEPS_FILE = "trajectories.parquet"


def evaluate(policy: Policy, env_id: str, env_kwargs: dict, episodes: int,
             num_envs: int, seed_base: int = EVAL_SEED_BASE, step_threads: int = 1
             ) -> tuple[EvalResult, list[Trajectory]]:
    """Run ``episodes`` fixed-seed episodes (seeds ``seed_base + i``; envs stepped on
    ``step_threads`` threads, see :func:`~memgym.rollouts.run_episodes`) and summarize them."""
    seeds = [seed_base + i for i in range(episodes)]
    trajectories = run_episodes(env_id, env_kwargs, policy, seeds, num_envs=num_envs,
                                step_threads=step_threads)
    return summarize(policy.name, trajectories), trajectories


def with_lora(model, lora: LoraConfig | None):
    """Wrap ``model`` with peft LoRA adapters (only they train), or return it unchanged.

    Raises:
        ConfigError: ``lora.layers_to_transform`` names a layer the model does not have.
    """
    if lora is None:
        return model
    layers = model.config.num_hidden_layers
    if lora.layers_to_transform and not all(0 <= i < layers for i in lora.layers_to_transform):
        raise ConfigError(f"lora.layers_to_transform must be layer indices in [0, {layers}), "
                          f"got {lora.layers_to_transform}")
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    return get_peft_model(model, PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, layers_to_transform=lora.layers_to_transform,
        task_type="CAUSAL_LM"))


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


RUN_FILES = (STEPS_FILE, "metrics.csv", "eval.json", "checkpoint", "checkpoint.old",
             "checkpoint.partial", "warm_start")


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


class _Run:
    """One ``memgym train`` run: the model, trainer, rollouts and what has been logged;
    ``reader``: the run's served reader (``config.reader``), if any."""

    def __init__(self, config: TrainConfig, console: Console, run_dir: Path,
                 source: Path | None, dist=None, reader: ServedReader | None = None) -> None:
        self.config, self.console, self.run_dir, self.dist = config, console, run_dir, dist
        self.reader, self.step_threads = reader, config.env_step_threads()
        self.is_main = dist is None or dist.is_main
        # a sharded checkpoint holds no Hugging Face weights: it loads into the trainer below
        self.model, self.tokenizer, ref_model = load_policy(config, None if dist else source)
        trainer_cls, section = ((PPOTrainer, config.ppo) if config.algorithm == "ppo"
                                else (GRPOTrainer, config.grpo))
        self.trainer = trainer_cls(self.model, self.tokenizer.pad_token_id, section, ref_model,
                                   **({} if dist is None else {"distributed": dist}))
        sharded = dist is not None and dist.strategy != "ddp"
        # DDP: the unwrapped module holds the whole weights; FSDP2 gathers them
        self.policy_model = self.model if dist is None else dist.unwrap(self.trainer.model)
        self.eval_model = None  # FSDP2 with asynchronous rollouts: a whole copy (rank 0)
        self.sampling = SamplingParams(
            max_new_tokens=config.sampling.max_new_tokens,
            temperature=config.sampling.temperature, top_p=config.sampling.top_p)
        self.greedy = SamplingParams(max_new_tokens=config.sampling.max_new_tokens,
                                     temperature=0.0)
        self.eval_kwargs = {**config.env, **config.eval_env}
        self.rng = np.random.default_rng(config.seed)  # episode and sampling seeds
        # the run's trajectories, appended as they come (rank 0 writes; the others count)
        self.store = TrajectoryLog(run_dir / STEPS_FILE) if self.is_main else None
        self.before: list[EvalResult] = []
        adapters = run_dir / ("adapter" if dist is None else f"adapter-rank{dist.rank}")
        self.rollouts = TrainingRollouts(
            config, self.policy_model, self.tokenizer, self.sampling, adapters,
            weights=(lambda: dist.full_state_dict(self.trainer.model)) if sharded else None)

    def llm_engine(self):
        """The engine that evaluates the current policy (rank 0 gets it, other ranks None).
        Every rank must call it: with a sharded model the whole weights are gathered, into the
        rollout engine (synced now), or, while that engine generates the next batch
        (``max_staleness > 0``), into a whole copy of the model on rank 0."""
        sharded = self.dist is not None and self.dist.strategy != "ddp"
        if not sharded or not self.rollouts.ahead:
            engine = self.rollouts.eval_engine(self.policy_model, self.trainer.global_step)
            return engine if self.is_main else None
        weights = self.dist.full_state_dict(self.trainer.model)
        if not self.is_main:
            return None
        if self.eval_model is None:
            self.eval_model = load_model(self.config.model)[0]
        self.eval_model.load_state_dict(weights)
        return HFEngine(self.eval_model, self.tokenizer, self.config.num_envs,
                        fast_path=self.config.model.fast_path)

    def evaluate(self, label: str, policy: Policy | None = None) -> EvalResult:
        """Evaluate ``policy`` (default: the current LLM policy, greedy) as ``label``, on rank
        0 only (other ranks get an empty result)."""
        engine = self.llm_engine() if policy is None else None
        if not self.is_main:
            return EvalResult(label, float("nan"), float("nan"), 0, float("nan"))
        policy = policy or LLMPolicy(engine, self.greedy, name=label)
        result, trajs = evaluate(policy, self.config.env_id, self.eval_kwargs,
                                 self.config.eval_episodes, self.config.num_envs,
                                 step_threads=self.step_threads)
        result.policy = label
        self.store.append(trajs)
        return result

    def warm_start(self) -> None:
        """SFT the policy on the ``warm_start.policy`` teacher's rollouts of the training env
        (:mod:`memgym.trainers.warm_start`); the model is saved to ``run_dir/warm_start``."""
        # TRL and datasets only when a run warm-starts (the vLLM venv has neither)
        from memgym.trainers.warm_start import WARM_START_SEED_BASE, warm_start

        config, settings = self.config, self.config.warm_start
        teacher = baselines(config.env_id)[settings.policy]()
        seeds = [WARM_START_SEED_BASE + i for i in range(settings.episodes)]
        # the teacher's actions as token ids under the policy's own prompts (chat context too)
        teacher = TokenizedPolicy(teacher, self.tokenizer)
        trajectories = run_episodes(config.env_id, config.env, teacher, seeds,
                                    num_envs=config.num_envs, progress=False,
                                    step_threads=self.step_threads)
        started = time.perf_counter()
        fit = warm_start(self.model, self.tokenizer, trajectories, settings,
                         self.run_dir / "warm_start", config.seed)
        self.console.print(f"warm start: SFT on {fit['examples']} steps of {settings.policy!r} "
                           f"(return {np.mean([t.episode_return for t in trajectories]):.3f}), "
                           f"loss {fit['loss_first']:.3f} → {fit['loss_last']:.3f} "
                           f"({time.perf_counter() - started:.0f}s)")

    def restore(self, state: dict, source: Path) -> tuple[list[dict], int]:
        """Continue from a checkpoint's state; returns its metric rows and next iteration.

        Raises:
            ConfigError: The state does not fit this run.
        """
        try:
            if self.dist is None:  # a sharded checkpoint loaded into the trainer already
                self.trainer.load_state_dict(state["trainer"])
            self.rng.bit_generator.state = state["seed_rng"]
            self.before = [EvalResult(**r) for r in state["before"]]
            rows, first = list(state["rows"]), int(state["iteration"])
            kept = int(state["num_trajectories"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"checkpoint {source} does not fit this run: "
                              f"{type(error).__name__}: {error}") from error
        set_rng_state(state["rng"])
        if first > self.config.iterations:
            raise ConfigError(f"iterations must be >= the checkpoint's {first} to resume, got "
                              f"{self.config.iterations}")
        if not self.is_main:
            return rows, first
        # the dataset may also hold what followed the checkpoint (the rollouts of the iteration
        # that was cut, the final evaluation of the run we resume): keep what preceded it
        self.store.truncate(kept)
        return rows, first

    def save(self, iteration: int, rng_state: dict, rows: list[dict]) -> None:
        """Checkpoint after ``iteration`` iterations (the trajectories are on disk already);
        ``rng_state``: the seed generator as the next iteration's rollout will draw from it.
        Distributed: every rank writes its shards (:mod:`memgym.trainers.sharded_checkpoint`).
        """
        summary = {"iteration": iteration, "global_step": self.trainer.global_step,
                   "config": self.config.model_dump()}
        state = {"iteration": iteration, "seed_rng": rng_state,
                 "num_trajectories": self.store.count if self.store else 0, "rows": rows,
                 "before": [r.__dict__ for r in self.before]}
        path = self.run_dir / "checkpoint"
        if self.dist is not None:
            save_sharded_checkpoint(path, self.dist, self.trainer, self.tokenizer, summary, state)
        else:
            save_checkpoint(path, self.model, self.tokenizer, self.trainer.state_dict(), summary,
                            state)

    def submit(self) -> dict:
        """Draw the next iteration's episode and sampling seeds and start its rollout on the
        engine's weights; returns the seed generator's state before the draw."""
        rng_state = copy.deepcopy(self.rng.bit_generator.state)
        episode_seeds = self.rng.integers(0, 2**31 - 1, size=self.config.episodes_per_iteration)
        seeds = [int(s) for s in episode_seeds for _ in range(self.config.group_size)]
        if self.dist is not None:  # each rank its share; gathered before the update
            seeds = self.dist.shard(seeds)
        self.rollouts.submit(self.policy_model, self.trainer.global_step, seeds,
                             int(self.rng.integers(2**31 - 1)))
        return rng_state

    def iteration(self, iteration: int, next_rollout: bool) -> dict:
        """Train on the pending rollout and (``next_rollout``) start the next one: before the
        update when the rollouts run ahead, after it otherwise. Returns the metrics row.

        Raises:
            RolloutError: A batch is more than ``rollout.max_staleness`` updates old.
        """
        config, trainer = self.config, self.trainer
        tick = time.perf_counter()
        trajs, rollout_seconds = self.rollouts.result()
        if self.dist is not None:
            trajs = self.dist.gather(trajs)
        staleness = trainer.global_step - min(t.policy_version for t in trajs)
        if staleness > config.rollout.max_staleness:
            raise RolloutError(f"a batch generated by policy version "
                               f"{min(t.policy_version for t in trajs)} reached the trainer at "
                               f"step {trainer.global_step}: more than rollout.max_staleness "
                               f"{config.rollout.max_staleness} behind")
        if next_rollout and self.rollouts.ahead:
            self.next_rng_state = self.submit()
        # the trainer scores tokens at the temperature they were sampled at (logits / T)
        stats = trainer.step(RolloutBatch.from_rollouts(trajs, self.sampling))
        if next_rollout and not self.rollouts.ahead:
            self.next_rng_state = self.submit()
        if self.store is not None:
            self.store.append(trajs)  # before any save
        summary = summarize("policy", trajs)
        row = {"iteration": iteration, "reward_mean": summary.mean, "reward_std": summary.std,
               "parse_error_rate": summary.parse_error_rate, **stats, **training_row(trajs),
               **rollout_diagnostics(trajs, self.sampling.max_new_tokens,
                                     self.tokenizer.eos_token_id),
               "rollout_staleness": staleness, "rollout_seconds": rollout_seconds,
               "seconds": time.perf_counter() - tick}
        for name in trajs[0].reward_terms:
            row[f"reward_{name}"] = float(np.mean([t.reward_terms[name] for t in trajs]))
        if config.eval_every and (iteration + 1) % config.eval_every == 0:
            val = self.evaluate(f"policy@{iteration}")
            row |= {"val_return_mean": val.mean, "val_parse_error_rate": val.parse_error_rate}
        if self.reader is not None:  # since the previous row: rollouts and evaluations
            row |= self.reader.metrics()
        return row

    def run(self, state: dict | None, source: Path | None, started: float) -> dict:
        """Evaluate, train and evaluate again (see :func:`train`); with several processes only
        rank 0 evaluates, logs and writes files."""
        config, console, run_dir, main = self.config, self.console, self.run_dir, self.is_main
        if state is not None:
            rows, first = self.restore(state, source)
            console.print(f"resuming {run_dir} from {source} at iteration {first} "
                          f"(step {self.trainer.global_step})")
        else:
            if config.resume:
                console.print(f"no checkpoint in {run_dir / 'checkpoint'}: starting from scratch")
            self.before = [self.evaluate(name, cls())
                           for name, cls in baselines(config.env_id).items()]
            self.before.append(self.evaluate("untrained"))
            if config.warm_start is not None:
                self.warm_start()
                self.before.append(self.evaluate("warm start"))
            pair_with_best_heuristic(self.before, baselines(config.env_id))
            rows, first = [], 0
        print_table(console, f"validation before training ({self.eval_kwargs})", self.before)
        log = MetricsLog(run_dir, rows, config.tensorboard) if main else None
        self.next_rng_state = self.rng.bit_generator.state
        if self.reader is not None:
            self.reader.metrics()  # the first row counts from the first rollout on
        if first < config.iterations:
            self.next_rng_state = self.submit()
        for iteration in range(first, config.iterations):
            row = self.iteration(iteration, next_rollout=iteration + 1 < config.iterations)
            if main:
                log.log(row)
            else:
                rows.append(row)
            console.print(f"iter {iteration}: reward {row['reward_mean']:+.4f} parse errors "
                          f"{row['parse_error_rate']:.0%} loss {row['loss']:+.4f} "
                          f"({row['seconds']:.1f}s)")
            done, every = iteration + 1, config.checkpoint_every
            if every and done % every == 0 and done < config.iterations:  # the last: below
                self.save(done, self.next_rng_state, rows)
        if main:
            log.close()
        self.save(config.iterations, self.next_rng_state, rows)

        after = self.evaluate("trained")
        pair_with_best_heuristic([*self.before, after], baselines(config.env_id))
        evals = {r.policy: r.row() for r in [*self.before, after]}
        evals["wall_seconds"] = time.perf_counter() - started
        if main:
            print_table(console, "validation after training", [*self.before, after])
            (run_dir / "eval.json").write_text(json.dumps(evals, indent=2))
            write_plots(log.frame(), evals, run_dir)
            if self.reader is not None:
                console.print(self.reader.describe())
            console.print(f"wrote {run_dir} in {evals['wall_seconds']:.0f}s")
        return evals


def train(config: TrainConfig, console: Console | None = None) -> dict:
    """Run the whole pipeline described in the module docstring.

    With ``config.resume`` and a checkpoint in ``run_dir/checkpoint`` (or ``checkpoint.old``,
    which a save killed between its two renames leaves), the run continues from it: the
    baselines' evaluation, metrics and trajectories so far are kept, and every iteration after
    the checkpoint computes the same rollouts and loss as an uninterrupted synchronous run
    (with ``rollout.max_staleness > 0`` the batch that was in flight is generated again, on
    the checkpoint's weights).

    Returns:
        The evaluation summary written to ``eval.json``.

    Raises:
        ConfigError: The checkpoint to resume from fails its manifest or does not fit the run,
            ``warm_start.policy`` is not a baseline of the env, or an env names a served reader
            (``answerer: served:<name>``) that is neither ``reader`` nor registered.
        RolloutError: Rollouts failed, or a batch came back staler than allowed.
    """
    dist_config = config.distributed
    if dist_config.strategy != "none" and dist_config.launcher == "ray":
        return _train_on_ray(config)
    dist = None
    if dist_config.strategy != "none":
        from memgym.trainers.distributed import Distributed

        dist = Distributed.from_config(dist_config)
    main = dist is None or dist.is_main
    console = console or Console()
    if not main:
        console = Console(quiet=True)
    run_dir = Path(config.run_dir)
    teachers = baselines(config.env_id)
    if config.warm_start is not None and config.warm_start.policy not in teachers:
        raise ConfigError(f"warm_start.policy must be a baseline of {config.env_id}: one of "
                          f"{sorted(teachers)}, got {config.warm_start.policy!r}")
    check_readers(config)
    if main:
        prepare_run_dir(run_dir, config.resume, config.overwrite)
    if dist is not None:
        dist.barrier()
    # the committed checkpoint (checkpoint/, or checkpoint.old/ if a save died between its
    # renames), verified against its manifest before anything is built from it
    source = find_checkpoint(run_dir / "checkpoint") if config.resume else None
    state = None if source is None or dist is not None else load_checkpoint_state(source)
    # before the seeds are set: loading it draws nothing from the run's random streams
    reader = None if config.reader is None else ServedReader(config.reader)
    try:
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        started = time.perf_counter()
        run = _Run(config, console, run_dir, source, dist, reader)
        try:  # the rollout runner (Ray actors, threads) is shut down whatever happens
            if dist is not None and source is not None:
                from memgym.trainers.sharded_checkpoint import load_sharded_checkpoint

                state = load_sharded_checkpoint(source, dist, run.trainer)
            return run.run(state, source, started)
        finally:
            run.rollouts.close()
    finally:
        if reader is not None:
            reader.close()


def _train_on_ray(config: TrainConfig) -> dict:
    """:func:`train` on ``distributed.num_workers`` Ray Train workers that form one
    torch.distributed group (:func:`memgym.trainers.distributed.run_on_ray`: it joins the
    running cluster, e.g. ``RAY_ADDRESS``, or starts a local one); returns rank 0's
    ``eval.json``. Workers run elsewhere than this directory, so ``run_dir`` and a local model
    directory are made absolute (on a cluster they must be on a file system every node sees).

    Raises:
        RolloutError: A worker failed.
    """
    from memgym.trainers.distributed import run_on_ray

    run_dir = Path(config.run_dir).resolve()
    model = config.model
    if Path(model.name_or_path).is_dir():
        model = model.model_copy(update={"name_or_path": str(Path(model.name_or_path).resolve())})
    worker = config.model_copy(update={
        "run_dir": str(run_dir), "model": model,
        "distributed": config.distributed.model_copy(update={"launcher": "torchrun"})})
    result = run_on_ray(_ray_worker, config.distributed.num_workers,
                        bool(config.distributed.use_gpu), {"config": worker.model_dump()})
    if result.error is not None:
        raise RolloutError(f"a Ray Train worker failed: {result.error}") from result.error
    return json.loads((run_dir / "eval.json").read_text())


def _ray_worker(loop_config: dict) -> None:
    """One Ray Train worker of :func:`_train_on_ray`."""
    train(TrainConfig(**loop_config["config"]))
