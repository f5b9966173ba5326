"""``memgym locomo-eval`` and ``memgym longmemeval-eval``: the whole-instance protocol
(:mod:`memgym.rollouts.whole_eval`) on each benchmark, registered on :data:`memgym.cli.app`."""

# no ``from __future__ import annotations``: the options' help texts are made per benchmark,
# and typer evaluates string annotations in the module's globals
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

DOCS = {
    "locomo": """Memory-R1's LoCoMo protocol: each policy reads every turn of each whole
    conversation of SPLIT, then the answer agent answers all of the conversation's questions
    (adversarial ones excluded) from the top-k retrieved memories; F1, BLEU-1 and EM per LoCoMo
    category.""",
    "longmemeval": """LongMemEval's protocol: each policy reads every turn of each whole chat
    history (-e variant=sample|s|m|oracle; the official files go in a data dir as
    longmemeval/<file>), then the answer agent answers its questions from the top-k retrieved
    memories; F1, BLEU-1 and EM per question type (single-session, multi-session,
    temporal-reasoning, knowledge-update, abstention; third-party for the sample's questions
    that are not LongMemEval's).""",
}


def whole_eval_command(name: str) -> Callable[..., None]:
    """The typer command of benchmark ``name`` (a key of
    :data:`memgym.envs.benchmarks.BENCHMARKS`), its defaults taken from the benchmark."""
    from memgym.envs.benchmarks import BENCHMARKS

    bench = BENCHMARKS[name]

    def command(
            policy: Annotated[list[str] | None, typer.Option(
                help="A baseline name, 'smollm2' or a model directory; repeatable (default: "
                     "store-all and mem0-like)")] = None,
            env_id: Annotated[str, typer.Option(help=f"A {bench.name} memory-manager env")
                              ] = bench.env_id,
            split: Annotated[str, typer.Option(help=f"{bench.name} split: {bench.splits}")
                             ] = "test",
            env_kw: Annotated[list[str] | None, typer.Option(
                "--env-kw", "-e", help="Env keyword argument KEY=VALUE (YAML value); "
                                       "repeatable, e.g. -e answer_top_k=30")] = None,
            max_new_tokens: int = 128,
            engine: Annotated[str, typer.Option(help="Engine of an LLM policy: hf, vllm or "
                                                     "openai")] = "hf",
            base_url: Annotated[str | None, typer.Option(help="Server of --engine openai")
                                ] = None,
            reader: Annotated[str | None, typer.Option(
                help="Answer with a frozen LLM answer agent over this model ('smollm2' or a "
                     "model directory), as Memory-R1 does; default: the env's answerer")
                              ] = None,
            csv: Annotated[Path | None, typer.Option(help="Also write every question's scores "
                                                          "here")] = None) -> None:
        import time

        import pandas as pd

        from memgym.cli import _engine, _kv, _policy, console
        from memgym.rollouts.whole_eval import category_table, evaluate_whole

        kwargs, served = _kv(env_kw), None
        if reader is not None:
            from memgym.config.run import ReaderConfig
            from memgym.reader import ServedReader

            served = ServedReader(ReaderConfig(model=reader))
            kwargs["answerer"] = f"served:{served.config.name}"
        frames = []
        try:
            for name in policy or ["store-all", "mem0-like"]:
                agent = _policy(env_id, name, 0.0, max_new_tokens, 0,
                                engine=_engine(engine, base_url))
                start = time.perf_counter()
                frames.append(evaluate_whole(env_id, kwargs, agent, bench, split,
                                             step_threads=1 if served is None else 8))
                console.print(f"{name}: {time.perf_counter() - start:.1f} s")
        finally:
            if served is not None:
                served.close()
        scores = pd.concat(frames, ignore_index=True)
        table = category_table(scores, bench.categories)
        console.print(f"{env_id} {kwargs}, {bench.name} {split}: "
                      f"{scores['instance'].nunique()} whole instances, answerer "
                      f"{'LLM ' + reader if reader else 'of the env'}")
        console.print(table.to_string(index=False, float_format="{:.3f}".format), markup=False)
        if csv is not None:
            scores.to_csv(csv, index=False)

    command.__doc__ = DOCS[name]
    command.__name__ = f"{name}_eval"
    return command
