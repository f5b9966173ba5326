"""Whole-instance evaluation: a memory manager reads each whole instance of a benchmark, then
the answer agent answers all of its questions; F1, BLEU-1 and EM per question category.

Memory-R1 (Yan et al., 2025, Sec. 4) evaluates this way on LoCoMo (each whole test
conversation); LongMemEval (Wu et al., ICLR 2025) asks its questions after each whole chat
history and reports them per question type. Each instance is one episode of a memory-manager env
on an env of its own (the benchmark's ``select`` keyword picks it, see
:mod:`memgym.envs.benchmarks`), all of them stepped together (one generation batch for an LLM
policy). The env's answerer answers: an LLM
answer agent (``answerer="served:<name>"``) is scored on its answer; the span answerer (``-v1``'s
default) on the best answer span of the memory it picked (:func:`~memgym.scoring.best_span`, an
extractive reader's upper bound); ``"recall"`` on the whole memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import pandas as pd

from memgym.envs.benchmarks import Benchmark
from memgym.errors import ConfigError
from memgym.rollouts.policy import Policy
from memgym.rollouts.runner import run_episodes
from memgym.scoring import best_span, bleu1, exact_match, token_f1


def whole_instance_kwargs(env_id: str, env_kwargs: dict, split: str,
                          benchmark: Benchmark) -> list[dict]:
    """The env kwargs of each whole instance of ``split``: ``env_kwargs`` with ``split``,
    ``benchmark.whole``, ``<benchmark.select>=k`` and ``max_steps`` = the longest instance's
    items.

    Raises:
        ConfigError: ``env_kwargs`` already sets one of the keys this protocol sets, or the
            env / source refuses the kwargs (e.g. an unknown split).
    """
    fixed = {"split", benchmark.select, "max_steps", *benchmark.whole} & set(env_kwargs)
    if fixed:
        raise ConfigError(f"the whole-instance protocol sets {sorted(fixed)} itself; remove "
                          f"them from the env kwargs")
    base = {**env_kwargs, "split": split, **benchmark.whole}
    env = gym.make(env_id, **base, max_steps=None).unwrapped
    count, longest = env.source.num_instances, env.max_steps
    env.close()
    return [{**base, benchmark.select: k, "max_steps": longest} for k in range(count)]


def score_question(record: dict, category: str, span: bool) -> dict:
    """F1, BLEU-1 and EM of one answered question (a record of the env's ``info["qa"]``).

    Args:
        record: ``question``, ``gold`` and ``prediction`` (see
            :class:`~memgym.envs.answerers.Answered`).
        category: The question's category label.
        span: Score the best answer span of the prediction (the span answerer's prediction is
            the memory it picked) rather than the prediction as it is.

    Returns:
        ``{"category", "question", "gold", "answer", "f1", "bleu1", "em"}``; scores in [0, 1].
    """
    answer = best_span(record["prediction"], record["gold"]) if span else record["prediction"]
    return {"category": category, "question": record["question"], "gold": record["gold"],
            "answer": answer, "f1": token_f1(answer, record["gold"]),
            "bleu1": bleu1(answer, record["gold"]), "em": exact_match(answer, record["gold"])}


def category_table(scores: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """Mean F1, BLEU-1 and EM per policy and category, with an ``overall`` row per policy (the
    mean over all questions, as Memory-R1's tables report it).

    Args:
        scores: One row per question: ``policy``, ``category``, ``f1``, ``bleu1``, ``em``.
        order: Category order (a benchmark's ``categories``); categories not in
            it follow in order of first appearance.

    Returns:
        Columns ``policy``, ``category``, ``questions``, ``f1``, ``bleu1``, ``em``: per policy
        (in order of appearance) its categories present, ``overall`` last.
    """
    def summary(policy: str, category: str, part: pd.DataFrame) -> dict:
        return {"policy": policy, "category": category, "questions": len(part),
                "f1": part["f1"].mean(), "bleu1": part["bleu1"].mean(), "em": part["em"].mean()}

    rows = []
    for policy, group in scores.groupby("policy", sort=False):
        present = list(dict.fromkeys(group["category"]))
        ranked = [c for c in order if c in present] + [c for c in present if c not in order]
        rows += [summary(policy, c, group[group["category"] == c]) for c in ranked]
        rows.append(summary(policy, "overall", group))
    return pd.DataFrame(rows)


def evaluate_whole(env_id: str, env_kwargs: dict, policy: Policy, benchmark: Benchmark,
                   split: str = "test", step_threads: int = 1) -> pd.DataFrame:
    """Run ``policy`` over every whole instance of ``split`` and score each question.

    Args:
        env_id: A memory-manager env on the benchmark's source (e.g.
            ``memgym/LoCoMoMemoryManager-v1``, ``memgym/LongMemEvalMemoryManager-v1``).
        env_kwargs: Its kwargs, without ``split`` / ``max_steps`` / the benchmark's
            ``select`` and ``whole`` keys (set here).
        policy: Any policy; the instances' envs are stepped together, one batch per tick.
        benchmark: What picks an instance and makes it whole (one of
            :data:`~memgym.envs.benchmarks.BENCHMARKS`).
        split: The source's split (Memory-R1 and LongMemEval report ``test``).
        step_threads: Threads that step the instances' envs (> 1 with a served LLM
            answerer: the instances that end together are answered in one batch).

    Returns:
        One row per question: ``policy``, ``instance`` (the instance id: LoCoMo's sample id,
        LongMemEval's question id), the columns of :func:`score_question`, ``steps`` and
        ``bank_size`` (the instance's items and its final bank).

    Raises:
        ConfigError: See :func:`whole_instance_kwargs`.
    """
    kwargs = whole_instance_kwargs(env_id, env_kwargs, split, benchmark)
    trajectories = run_episodes(env_id, kwargs, policy, [0] * len(kwargs),
                                num_envs=len(kwargs), step_threads=step_threads)
    rows = []
    for kw, traj in zip(kwargs, trajectories, strict=True):
        env = gym.make(env_id, **kw).unwrapped
        instance = env.source.instance(0)
        span = getattr(env.answerer, "span", False)
        env.close()
        last = traj.steps[-1].info
        for question, record in zip(instance.questions, last["qa"], strict=True):
            rows.append({"policy": policy.name, "instance": instance.id.split(":")[0],
                         **score_question(record, question.category, span),
                         "steps": len(traj.steps), "bank_size": last["bank_size"]})
    return pd.DataFrame(rows)
