"""The ``memgym`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from memgym.cli_data import data_app
from memgym.cli_whole import whole_eval_command
from memgym.errors import MemgymError, PolicyError

app = typer.Typer(help="memgym: RL environments and trainers for LLM memory policies.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()

EnvKw = Annotated[list[str] | None, typer.Option(
    "--env-kw", "-e", help="Env keyword argument KEY=VALUE (YAML value); repeatable.")]
EngineOpt = Annotated[str, typer.Option(
    help="Engine of an LLM policy: hf (transformers), vllm, or openai (a server at --base-url)")]
# a trajectory file, or a run's trajectory dataset (a directory of part files)
TrajPath = Annotated[Path, typer.Argument(exists=True)]
BaseUrl = Annotated[str | None, typer.Option(
    help="OpenAI-compatible server of --engine openai, e.g. http://localhost:8000/v1")]


def _kv(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _check_policy(env_id: str, spec: str, tokenizer: str | None = None) -> bool:
    """Whether ``spec`` names a baseline of ``env_id`` (else an LLM).

    Raises:
        PolicyError: ``spec`` is neither a baseline, ``smollm2``, a directory nor a Hugging
            Face id (``org/name``), or it is an LLM and ``tokenizer`` is given (an LLM records
            its own token ids).
    """
    from memgym.envs import baselines

    scripted = baselines(env_id)
    if spec in scripted:
        return True
    from memgym.rollouts.hf import SMOLLM2  # torch + transformers: only for LLM policies

    if spec != SMOLLM2 and not Path(spec).is_dir() and (spec.count("/") != 1
                                                         or Path(spec).exists()):
        raise PolicyError(f"policy must be one of {[*scripted, SMOLLM2]}, a model directory "
                          f"or a Hugging Face id (org/name), got {spec!r}")
    if tokenizer is not None:
        raise PolicyError(f"--tokenizer records a scripted policy's actions as token ids; "
                          f"{spec!r} is an LLM, which records its own")
    return False


def _engine(engine: str, base_url: str | None):
    """The ``rollout:`` section that ``--engine`` / ``--base-url`` describe.

    Raises:
        ConfigError: An unknown engine, or ``openai`` without a URL (or a URL without it).
    """
    from pydantic import ValidationError

    from memgym.config import RolloutConfig
    from memgym.errors import ConfigError

    try:
        return RolloutConfig(engine=engine, base_url=base_url)
    except ValidationError as exc:
        raise ConfigError(f"--engine {engine} --base-url {base_url}: {exc}") from exc


def _policy(env_id: str, spec: str, temperature: float, max_new_tokens: int, seed: int,
            tokenizer: str | None = None, engine=None):
    """A baseline of ``env_id`` by name (its actions recorded as token ids under
    ``tokenizer``'s chat template when given), or an LLM policy: ``smollm2``, a model
    directory or a Hugging Face id, served by ``engine`` (a ``RolloutConfig``; default
    ``hf``).

    Raises:
        PolicyError: See :func:`_check_policy`.
    """
    from memgym.envs import baselines

    if _check_policy(env_id, spec, tokenizer):
        scripted = baselines(env_id)[spec]()
        if tokenizer is None:
            return scripted
        from memgym.rollouts import TokenizedPolicy
        from memgym.rollouts.hf import load_tokenizer

        return TokenizedPolicy(scripted, load_tokenizer(tokenizer))
    from memgym.config import ModelConfig
    from memgym.engine import SamplingParams
    from memgym.rollouts.engines import engine_policy

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return engine_policy(engine or _engine("hf", None), ModelConfig(name_or_path=spec), params,
                         name=spec)


@app.command()
def envs() -> None:
    """List the registered memgym environments."""
    from memgym.envs import ENVS

    table = Table()
    table.add_column("id", no_wrap=True)  # ids stay whole and copyable; descriptions wrap
    table.add_column("description")
    for env_id, entry in ENVS.items():
        table.add_row(env_id, entry.description)
    console.print(table)


@app.command()
def rollout(env_id: str, out: Annotated[Path, typer.Option(help="Parquet file to write")],
            policy: str = "mem0-like", episodes: int = 8, seed: int = 0, num_envs: int = 8,
            temperature: float = 0.0, max_new_tokens: int = 48, env_kw: EnvKw = None,
            ray_address: Annotated[str | None, typer.Option(
                help="Run on Ray: 'local' (a private instance), 'auto' (the running cluster) "
                     "or ray://host:port; env workers and the policy become actors")] = None,
            env_workers: Annotated[int, typer.Option(
                help="With --ray-address: env-worker actors (NUM_ENVS envs in all)")] = 2,
            tokenizer: Annotated[str | None, typer.Option(
                help="Record a scripted policy's actions as token ids under this model's chat "
                     "template ('smollm2' or a model directory), as its own completions would "
                     "be: the trajectories get training segments (SFT warm start)")] = None,
            engine: EngineOpt = "hf", base_url: BaseUrl = None,
            ) -> None:
    """Run episodes (seeds SEED..SEED+EPISODES-1) and save their trajectories."""
    from memgym.train import summarize
    from memgym.trajectory import write_trajectories

    seeds = list(range(seed, seed + episodes))
    if ray_address is None:
        from memgym.rollouts import run_episodes

        agent = _policy(env_id, policy, temperature, max_new_tokens, seed, tokenizer,
                        _engine(engine, base_url))
        trajs = run_episodes(env_id, _kv(env_kw), agent, seeds, num_envs=num_envs)
    else:
        from functools import partial

        from memgym.config import RolloutConfig
        from memgym.rollouts.ray_runner import RayRolloutRunner

        _check_policy(env_id, policy, tokenizer)  # fail here, not in an actor's constructor
        config = RolloutConfig(ray_address=ray_address, env_workers=env_workers,
                               envs_per_worker=-(-num_envs // env_workers), max_batch=num_envs)
        factory = partial(_policy, env_id, policy, temperature, max_new_tokens, seed, tokenizer,
                          _engine(engine, base_url))
        with RayRolloutRunner(env_id, _kv(env_kw), factory, config) as runner:
            trajs = runner.run(seeds)
    write_trajectories(trajs, out)
    result = summarize(policy, trajs)
    console.print(f"{result.episodes} episodes, mean return {result.mean:.4f} "
                  f"(std {result.std:.4f}), parse errors {result.parse_error_rate:.1%} → {out}")


@app.command(name="eval")
def eval_(env_ids: Annotated[list[str] | None, typer.Argument(
              help="Env ids (default: every registered env)")] = None,
          policy: Annotated[list[str] | None, typer.Option(
              help="'baselines' (each env's own), a baseline name, 'smollm2' or a model "
                   "directory; repeatable")] = None,
          episodes: Annotated[int, typer.Option(
              help="Episodes per policy and env: seeds SEED_BASE..SEED_BASE+EPISODES-1")] = 16,
          seed_base: Annotated[int, typer.Option(
              help="First episode seed; every policy runs on the same seeds (default: the "
                   "validation seeds of memgym train)")] = 1_000_000,  # train.EVAL_SEED_BASE
          num_envs: int = 16, max_new_tokens: int = 48,
          markdown: Annotated[Path | None, typer.Option(help="Also write the table here")] = None,
          json_: Annotated[Path | None, typer.Option(
              "--json", help="Also write the rows here: a JSON list of {env_id, policy, mean, "
                             "ci_low, ci_high, episodes, paired_diff_low, ...}")] = None,
          env_kw: EnvKw = None, engine: EngineOpt = "hf", base_url: BaseUrl = None,
          reader: Annotated[str | None, typer.Option(
              help="Serve a frozen LLM answer agent over this model ('smollm2' or a model "
                   "directory; hf engine, greedy, batched, cached) as the reader 'llm', which "
                   "-e answerer=served:llm selects; envs are then stepped on NUM_ENVS threads")
          ] = None,
          sweep: Annotated[str | None, typer.Option(
              help="KEY=V1,V2,...: evaluate at every value of the env option KEY (values YAML) "
                   "on the same seeds; writes SWEEP_OUT.csv and SWEEP_OUT.png (mean return "
                   "with 95% CI against the value)")] = None,
          sweep_out: Annotated[Path | None, typer.Option(
              help="Path stem of the sweep's CSV and PNG (default: runs/sweep/KEY)")] = None,
          ) -> None:
    """Mean return of each policy on each env over the same fixed-seed episodes (LLMs decode
    greedily), with its 95% percentile-bootstrap interval and the paired difference to the best
    heuristic (the highest-mean scripted baseline evaluated that reads no gold data: not
    oracle or evidence; 'reference' in its own row, 0 / 0 in the JSON) on the same seeds; one
    table for all, or with --sweep one table per value (JSON rows then carry key and value)."""
    import json

    from memgym.config.run import served_names
    from memgym.envs import ENVS
    from memgym.errors import ConfigError
    from memgym.report import markdown_table, print_table
    from memgym.sweep import check_sweep, parse_sweep, sweep_frame, write_sweep

    if episodes < 1 or seed_base < 0:
        raise ConfigError(f"--episodes must be >= 1 and --seed-base >= 0, got {episodes} and "
                          f"{seed_base}")
    named = served_names(_kv(env_kw))
    if named - {"llm"} or (named and reader is None):
        raise ConfigError(f"-e answerer=served:{min(named)} needs a served reader: pass "
                          f"--reader MODEL and -e answerer=served:llm")
    served_reader = None
    if reader is not None:
        from memgym.config.run import ReaderConfig
        from memgym.reader import ServedReader

        served_reader = ServedReader(ReaderConfig(model=reader))
    env_ids = env_ids or list(ENVS)
    key, values = parse_sweep(sweep) if sweep is not None else (None, [None])
    if key is not None:
        check_sweep(env_ids, _kv(env_kw), key, values)
    llm_engine, llms, tables = _engine(engine, base_url), {}, []
    try:
        for value in values:
            kwargs = _kv(env_kw) | ({} if key is None else {key: value})
            rows = _eval_rows(env_ids, policy, episodes, seed_base, num_envs, max_new_tokens,
                              kwargs, llm_engine, num_envs if reader else 1, llms)
            print_table(console, f"mean return over {episodes} episodes, seeds {seed_base}.."
                                 f"{seed_base + episodes - 1} {kwargs}", rows)
            tables.append((value, rows))
        if served_reader is not None:
            console.print(served_reader.describe())
    finally:
        if served_reader is not None:
            served_reader.close()
    labelled = [((env_id if key is None else f"{env_id} {key}={value}"), r)
                for value, rows in tables for env_id, r in rows]
    if markdown is not None:
        markdown.write_text(markdown_table(labelled))
    if json_ is not None:
        json_.write_text(json.dumps(
            [{"env_id": env_id, **({} if key is None else {"key": key, "value": value}),
              **r.row()} for value, rows in tables for env_id, r in rows], indent=2))
    if key is not None:
        frame = sweep_frame(key, tables)
        csv, png = write_sweep(frame, sweep_out or Path("runs/sweep") / key)
        console.print(f"sweep of {key} over {values}: {len(frame)} rows → {csv}, {png}")


def _eval_rows(env_ids: list[str], policy: list[str] | None, episodes: int, seed_base: int,
               num_envs: int, max_new_tokens: int, env_kwargs: dict, llm_engine,
               step_threads: int, llms: dict | None = None) -> list[tuple[str, object]]:
    """``(env id, EvalResult)`` of each policy on each env (see :func:`eval_`); an LLM policy's
    engine is ``llm_engine`` (a ``RolloutConfig``), built once per model and kept in ``llms``
    (model → policy; shared across envs, and across calls when given); the envs of a tick
    are stepped on ``step_threads`` threads."""
    from memgym.envs import baselines
    from memgym.report import pair_with_best_heuristic
    from memgym.train import evaluate

    rows = []
    llms = {} if llms is None else llms  # one engine per model
    for env_id in env_ids:
        names = [n for p in (policy or ["baselines"])
                 for n in (baselines(env_id) if p == "baselines" else [p])]
        results = []
        for name in dict.fromkeys(names):
            if name not in baselines(env_id) and name not in llms:
                llms[name] = _policy(env_id, name, 0.0, max_new_tokens, 0, engine=llm_engine)
            agent = llms.get(name) or _policy(env_id, name, 0.0, max_new_tokens, 0)
            result = evaluate(agent, env_id, env_kwargs, episodes, num_envs, seed_base,
                              step_threads=step_threads)[0]
            result.policy = name
            results.append(result)
        pair_with_best_heuristic(results, baselines(env_id))
        rows += [(env_id, result) for result in results]
    return rows


@app.command()
def train(config: Path, set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a config key: KEY=VALUE, KEY dotted into its section "
                      "(grpo.learning_rate=1e-6, rollout.engine=vllm, model.dtype=bf16), VALUE "
                      "YAML; repeatable.")] = None,
          resume: Annotated[bool, typer.Option(
              "--resume", help="Continue from RUN_DIR/checkpoint if it exists")] = False,
          overwrite: Annotated[bool, typer.Option(
              "--overwrite", help="Delete the run RUN_DIR holds and start afresh")] = False,
          ) -> None:
    """Train a policy as CONFIG says (see experiments/quickstart.yaml). A RUN_DIR that holds a
    run is refused unless --resume or --overwrite is given."""
    from memgym.config import load_config, parse_overrides

    overrides = (parse_overrides(set_ or []) | ({"resume": True} if resume else {})
                 | ({"overwrite": True} if overwrite else {}))
    parsed = load_config(config, overrides)  # before torch is imported: errors come fast
    from memgym.train import train as run_training

    run_training(parsed, console)


@app.command()
def learn(configs: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
          readme: Annotated[Path | None, typer.Option(
              help="Write the table between its markers in this file (README.md)")] = None,
          table_only: Annotated[bool, typer.Option(
              "--table-only", help="Train nothing: tabulate the runs' eval.json")] = False,
          set_: Annotated[list[str] | None, typer.Option(
              "--set", help="Override a key of every config (as memgym train --set)")] = None,
          ) -> None:
    """Train each CONFIG afresh (experiments/learn/*.yaml) and tabulate untrained, best
    heuristic, warm start and trained rows with 95% CIs and paired differences."""
    from memgym.learn import learn as run_learn
    from memgym.learn import summary
    from memgym.report import print_table

    rows = run_learn(configs, readme, not table_only, set_ or [])
    print_table(console, "trained vs untrained vs best heuristic (validation)", rows)
    console.print(summary(rows))


@app.command()
def sft(trajectories: TrajPath,
        out: Annotated[Path, typer.Option(help="Directory for the fine-tuned model")],
        model: Annotated[str, typer.Option(help="'smollm2' or a model directory")] = "smollm2",
        epochs: float = 1.0, learning_rate: float = 2e-5, batch_size: int = 8,
        grad_accum: int = 1, max_length: int = 2048, seed: int = 0,
        min_return: Annotated[float | None, typer.Option(
            help="Keep trajectories with at least this return")] = None,
        env: Annotated[str | None, typer.Option(help="Keep this env id's trajectories")] = None,
        policy: Annotated[str | None, typer.Option(
            help="Keep this policy's trajectories (e.g. oracle)")] = None) -> None:
    """Fine-tune a policy on saved trajectories (TRL SFTTrainer, loss on the actions only); the
    output directory works as `model:` of `memgym train` and as an eval policy."""
    from memgym.rollouts.hf import load_model
    from memgym.trainers.sft import SFTSettings, sft_dataset, train_sft

    dataset = sft_dataset(_trajectories(trajectories), min_return, env, policy)
    settings = SFTSettings(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                           grad_accum=grad_accum, max_length=max_length, seed=seed)
    llm, tokenizer = load_model(model)
    history = train_sft(llm, tokenizer, dataset, out, settings)
    losses = [h["loss"] for h in history if "loss" in h]
    console.print(f"{len(dataset)} examples, {len(losses)} steps, loss {losses[0]:.4f} → "
                  f"{losses[-1]:.4f}; wrote {out}")


def _trajectories(path: Path, episode: str | None = None) -> list:
    """The trajectories of a file, or the one whose id starts with ``episode``."""
    from memgym.errors import ConfigError
    from memgym.trajectory import load_trajectories, trajectories_from_frame

    trajs = trajectories_from_frame(load_trajectories(path))
    if episode is None:
        return trajs
    found = [t for t in trajs if t.id.startswith(episode)]
    if len(found) != 1:
        raise ConfigError(f"--episode must match exactly one trajectory id of {path}, "
                          f"{episode!r} matches {len(found)}")
    return found


def _verify(path: Path, max_report: int, workers: int = 1) -> bool:
    from memgym.replay import replay as run_replay
    from memgym.trajectory import load_trajectories

    report = run_replay(load_trajectories(path), workers=workers)
    console.print(f"replayed {report.trajectories} trajectories, {report.steps} steps in "
                  f"{report.seconds:.2f}s ({report.steps_per_second:.0f} steps/s): "
                  f"{len(report.divergences)} divergences")
    for d in report.divergences[:max_report]:
        console.print(f"divergence: {d.describe()}", markup=False, highlight=False,
                      soft_wrap=True)
    if len(report.divergences) > max_report:
        console.print(f"... and {len(report.divergences) - max_report} more")
    return report.ok


@app.command()
def replay(path: TrajPath,
           verify: Annotated[bool, typer.Option(
               "--verify", help="Verify PATH (the default without --fork-at), or with --fork-at "
                                "the fork file written")] = False,
           fork_at: Annotated[int | None, typer.Option(
               help="Fork each trajectory (or --episode) at this step")] = None,
           policy: Annotated[str | None, typer.Option(help="Policy that continues a fork")] = None,
           out: Annotated[Path | None, typer.Option(help="Fork file to write")] = None,
           episode: Annotated[str | None, typer.Option(help="Trajectory id (prefix)")] = None,
           samples: int = 1, num_envs: int = 8, temperature: float = 0.0,
           max_new_tokens: int = 48, seed: int = 0, max_report: int = 5,
           workers: Annotated[int, typer.Option(help="Processes that verify in parallel")] = 1,
           ) -> None:
    """Re-execute saved actions in fresh envs (exit 1 on any divergence), or fork episodes."""
    from memgym.errors import ConfigError

    if fork_at is None:
        if not _verify(path, max_report, workers):
            raise typer.Exit(1)
        return
    if policy is None or out is None:
        raise ConfigError("--fork-at needs --policy and --out")
    from memgym.rollouts.fork import fork_episodes
    from memgym.trajectory import write_trajectories

    parents = [t for t in _trajectories(path, episode) if len(t.steps) > fork_at]
    if not parents:
        raise ConfigError(f"no trajectory of {path} has more than {fork_at} steps")
    forks = []
    for env_id in dict.fromkeys(t.env_id for t in parents):
        agent = _policy(env_id, policy, temperature, max_new_tokens, seed)
        forks += fork_episodes([t for t in parents if t.env_id == env_id], fork_at, agent,
                               samples, num_envs)
    write_trajectories(forks, out)
    mean = sum(t.episode_return for t in forks) / len(forks)
    before = sum(t.episode_return for t in parents) / len(parents)
    console.print(f"{len(forks)} forks of {len(parents)} trajectories at step {fork_at}: mean "
                  f"return {mean:.4f} (parents {before:.4f}) → {out}")
    if verify and not _verify(out, max_report, workers):
        raise typer.Exit(1)


@app.command()
def show(path: TrajPath,
         episode: Annotated[str | None, typer.Option(
             help="Trajectory id (prefix); default: the first")] = None,
         html: Annotated[Path | None, typer.Option(
             "--html", help="Also write a self-contained HTML page here")] = None) -> None:
    """Print one trajectory's timeline: inputs, actions, ops, memory changes, rewards."""
    from memgym.show import build_timeline, render_terminal

    trajs = _trajectories(path, episode)
    if episode is None and len(trajs) > 1:
        console.print(f"{len(trajs)} trajectories in {path}; showing the first "
                      f"(choose with --episode)")
    timeline = build_timeline(trajs[0])
    render_terminal(timeline, console)
    if html is not None:
        from memgym.show_html import write_html

        console.print(f"wrote {write_html(timeline, html)}")


@app.command()
def metrics(path: TrajPath,
            by: Annotated[str, typer.Option(help="trajectory or policy")] = "policy",
            csv: Annotated[Path | None, typer.Option(help="Also write the table here")] = None,
            ) -> None:
    """Memory metrics of saved trajectories (see memgym.metrics)."""
    from memgym.metrics import summarize
    from memgym.trajectory import load_trajectories

    table = summarize(load_trajectories(path), by=by)
    shown = (table.set_index(["env_id", "policy"]).T.to_string(float_format=lambda v: f"{v:.3f}")
             if by == "policy" else table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(shown, markup=False, highlight=False, soft_wrap=True)
    if csv is not None:
        table.to_csv(csv, index=False)


@app.command()
def export(path: TrajPath,
           format_: Annotated[str, typer.Option("--format", help="sft or dpo")],
           out: Annotated[Path, typer.Option(help="JSONL file to write")],
           min_return: float | None = None, env: str | None = None,
           policy: str | None = None) -> None:
    """Export trajectories as SFT conversations or DPO pairs (TRL formats, JSONL)."""
    from memgym.export import export as run_export

    count = run_export(_trajectories(path), format_, out, min_return, env, policy)
    console.print(f"wrote {count} {format_} records → {out}")


app.command(name="locomo-eval")(whole_eval_command("locomo"))
app.command(name="longmemeval-eval")(whole_eval_command("longmemeval"))
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point: memgym's own errors become a one-line message and exit code 2."""
    try:
        app()
    except MemgymError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(2) from exc
