"""Memory-R1's LoCoMo test protocol: a memory manager reads whole conversations.

Memory-R1 (Yan et al., 2025, Sec. 4) evaluates on LoCoMo's test conversations (3-10 of its
1:1:8 split): the memory manager processes every dialogue turn of a conversation, then an answer
agent answers all of that conversation's questions (adversarial ones excluded) from the top-k
memories retrieved for each, and F1, BLEU-1 and EM are reported per question category.

Here each conversation is one episode of a LoCoMo memory-manager env with ``window=None``
(:class:`~memgym.envs.locomo.source.LoCoMoSource`), every conversation on an env of its own and
all of them stepped together (one generation batch for an LLM policy). The env's answerer
answers: an LLM answer agent (``answerer="served:<name>"``) is scored on its answer; the span
answerer (``-v1``'s default) on the best answer span of the memory it picked
(:func:`~memgym.scoring.best_span`, an extractive reader's upper bound); ``"recall"`` on the
whole memory.
"""

from __future__ import annotations

import gymnasium as gym
import pandas as pd

from memgym.envs.locomo.data import SPLITS, load_locomo
from memgym.errors import ConfigError
from memgym.rollouts.policy import Policy
from memgym.rollouts.runner import run_episodes
from memgym.scoring import best_span, bleu1, exact_match, token_f1

CATEGORY_ORDER = ("single-hop", "multi-hop", "temporal", "open-domain", "adversarial")


def conversation_kwargs(env_kwargs: dict, split: str = "test") -> list[dict]:
    """The env kwargs of each whole conversation of ``split``: ``env_kwargs`` with ``split``,
    ``window=None``, ``conversation=k`` and ``max_steps`` = the longest conversation's turns.

    Raises:
        ConfigError: ``split`` is not a LoCoMo split, or ``env_kwargs`` already sets one of
            the keys this protocol sets.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    fixed = {"split", "window", "conversation", "max_steps"} & set(env_kwargs)
    if fixed:
        raise ConfigError(f"the whole-conversation protocol sets {sorted(fixed)} itself; "
                          f"remove them from the env kwargs")
    conversations = load_locomo(env_kwargs.get("data_path"))
    longest = max(len(conversations[c].turns) for c in SPLITS[split])
    return [{**env_kwargs, "split": split, "window": None, "conversation": k,
             "max_steps": longest} for k in range(len(SPLITS[split]))]


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


def category_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean F1, BLEU-1 and EM per policy and category, with an ``overall`` row per policy (the
    mean over all questions, as Memory-R1's tables report it).

    Args:
        scores: One row per question: ``policy``, ``category``, ``f1``, ``bleu1``, ``em``.

    Returns:
        Columns ``policy``, ``category``, ``questions``, ``f1``, ``bleu1``, ``em``; categories
        in :data:`CATEGORY_ORDER`, ``overall`` last.
    """
    def summary(policy: str, category: str, part: pd.DataFrame) -> dict:
        return {"policy": policy, "category": category, "questions": len(part),
                "f1": part["f1"].mean(), "bleu1": part["bleu1"].mean(), "em": part["em"].mean()}

    rows = []
    for policy, group in scores.groupby("policy", sort=False):
        rows += [summary(policy, c, group[group["category"] == c]) for c in CATEGORY_ORDER
                 if (group["category"] == c).any()]
        rows.append(summary(policy, "overall", group))
    table = pd.DataFrame(rows)
    return table


def evaluate_conversations(env_id: str, env_kwargs: dict, policy: Policy,
                           split: str = "test", step_threads: int = 1) -> pd.DataFrame:
    """Run ``policy`` over every whole conversation of ``split`` and score each question.

    Args:
        env_id: A LoCoMo memory-manager env (e.g. ``memgym/LoCoMoMemoryManager-v1``).
        env_kwargs: Its kwargs, without ``split`` / ``window`` / ``conversation`` /
            ``max_steps`` (set here).
        policy: Any policy; the conversations' envs are stepped together, one batch per tick.
        split: LoCoMo split (Memory-R1 reports ``test``).
        step_threads: Threads that step the conversations' envs (> 1 with a served LLM
            answerer: the conversations that end together are answered in one batch).

    Returns:
        One row per question: ``policy``, ``conversation`` (the sample id), the columns of
        :func:`score_question`, ``steps`` and ``bank_size`` (the conversation's turns and its
        final bank).

    Raises:
        ConfigError: See :func:`conversation_kwargs`.
    """
    kwargs = conversation_kwargs(env_kwargs, split)
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
            rows.append({"policy": policy.name, "conversation": instance.id.split(":")[0],
                         **score_question(record, question.category, span),
                         "steps": len(traj.steps), "bank_size": last["bank_size"]})
    return pd.DataFrame(rows)
