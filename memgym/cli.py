"""The ``memgym`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from memgym.errors import MemgymError, PolicyError

app = typer.Typer(help="memgym: RL environments and trainers for LLM memory policies.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()

EnvKw = Annotated[list[str] | None, typer.Option(
    "--env-kw", "-e", help="Env keyword argument KEY=VALUE (YAML value); repeatable.")]


def _kv(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _policy(env_id: str, spec: str, temperature: float, max_new_tokens: int, seed: int):
    """A baseline of ``env_id`` by name, or an LLM policy: ``smollm2`` or a model directory."""
    from memgym.engine import SamplingParams
    from memgym.envs import baselines
    from memgym.rollouts import LLMPolicy
    from memgym.rollouts.hf import SMOLLM2, HFEngine

    scripted = baselines(env_id)
    if spec in scripted:
        return scripted[spec]()
    if spec != SMOLLM2 and not Path(spec).is_dir():
        raise PolicyError(f"policy must be one of {[*scripted, SMOLLM2]} or a model "
                          f"directory, got {spec!r}")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return LLMPolicy(HFEngine.from_pretrained(spec), params, name=spec)


@app.command()
def envs() -> None:
    """List the registered memgym environments."""
    from memgym.envs import ENVS

    table = Table("id", "description")
    for env_id, entry in ENVS.items():
        table.add_row(env_id, entry.description)
    console.print(table)


@app.command()
def rollout(env_id: str, out: Annotated[Path, typer.Option(help="Parquet file to write")],
            policy: str = "mem0-like", episodes: int = 8, seed: int = 0, num_envs: int = 8,
            temperature: float = 0.0, max_new_tokens: int = 48, env_kw: EnvKw = None) -> None:
    """Run episodes (seeds SEED..SEED+EPISODES-1) and save their trajectories."""
    from memgym.rollouts import run_episodes
    from memgym.train import summarize
    from memgym.trajectory import write_trajectories

    agent = _policy(env_id, policy, temperature, max_new_tokens, seed)
    trajs = run_episodes(env_id, _kv(env_kw), agent, list(range(seed, seed + episodes)),
                         num_envs=num_envs)
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
          episodes: int = 16, num_envs: int = 16, max_new_tokens: int = 48,
          markdown: Annotated[Path | None, typer.Option(help="Also write the table here")] = None,
          env_kw: EnvKw = None) -> None:
    """Mean return of each policy on each env over the same fixed-seed episodes (LLMs decode
    greedily); one table for all."""
    from memgym.envs import ENVS, baselines
    from memgym.train import evaluate, markdown_table, print_table

    rows = []
    llms: dict[str, object] = {}  # one engine per model, shared across envs
    for env_id in env_ids or list(ENVS):
        names = [n for p in (policy or ["baselines"])
                 for n in (baselines(env_id) if p == "baselines" else [p])]
        for name in names:
            if name not in baselines(env_id) and name not in llms:
                llms[name] = _policy(env_id, name, 0.0, max_new_tokens, 0)
            agent = llms.get(name) or _policy(env_id, name, 0.0, max_new_tokens, 0)
            result = evaluate(agent, env_id, _kv(env_kw), episodes, num_envs)[0]
            result.policy = name
            rows.append((env_id, result))
    print_table(console, f"mean return over {episodes} fixed-seed episodes {_kv(env_kw)}", rows)
    if markdown is not None:
        markdown.write_text(markdown_table(rows))


@app.command()
def train(config: Path, set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a top-level config key: KEY=VALUE; repeatable.")] = None) -> None:
    """Train a policy as CONFIG says (see experiments/quickstart.yaml)."""
    from memgym.config import load_config
    from memgym.train import train as run_training

    run_training(load_config(config, _kv(set_)), console)


@app.command()
def replay(path: Path) -> None:
    """Re-execute saved actions in fresh envs; exit 1 if anything differs."""
    from memgym.replay import replay as run_replay
    from memgym.trajectory import load_trajectories

    report = run_replay(load_trajectories(path))
    rate = report.steps / report.seconds if report.seconds else float("inf")
    console.print(f"replayed {report.trajectories} trajectories, {report.steps} steps in "
                  f"{report.seconds:.2f}s ({rate:.0f} steps/s): "
                  f"{len(report.divergences)} divergences")
    if report.divergences:
        d = report.divergences[0]
        console.print(f"first divergence: trajectory {d.trajectory_id} step {d.step} "
                      f"field {d.field}\n  recorded: {d.recorded}\n  replayed: {d.replayed}",
                      markup=False)
        raise typer.Exit(1)


def main() -> None:
    """Entry point: memgym's own errors become a one-line message and exit code 2."""
    try:
        app()
    except MemgymError as exc:
        console.print(f"error: {exc}", markup=False)
        raise SystemExit(2) from exc
