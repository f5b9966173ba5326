"""How much can a which-turn-to-keep decision read from the base model gain on the quickstart?

The quickstart (``experiments/quickstart.yaml``) asks the policy, turn by turn, whether to store
the turn in a 2-entry bank; the privileged ``evidence`` teacher stores the turns that questions
will ask about. This script measures the ceiling of a decision the policy could learn from what
it sees, before any training:

1. The teacher's steps on the warm start's training seeds and on ``memgym train``'s validation
   seeds, rendered as the policy's prompts (:class:`~memgym.rollouts.TokenizedPolicy`).
2. One forward pass of the base model per step up to the *decision token* (the first completion
   token where a write and an empty action differ: `` [{`` against `` []``); its hidden state at
   ``--layer`` is the step's feature vector (standardised on the training steps).
3. An L2-regularised logistic regression (torch L-BFGS) on the training steps, label = the
   teacher wrote; its validation AUC, beside the base model's own decision logit's.
4. The validation return, paired with store-all on the same seeds (paired bootstrap 95% CI,
   :func:`memgym.stats.paired_bootstrap_ci`), of scripted policies that decide by a score:
   *threshold* policies store the turn verbatim iff its score is above a cut (the probe's
   ``q``-quantile on the validation steps, a cut chosen on validation: optimistic; or >= k
   words), *keep-best* policies fill the bank, then UPDATE the lowest-scored memory shown with
   a turn that scores higher (what the ``evidence-keep`` teacher does with gold evidence).

A step's score is read on the teacher's prompt for that step and looked up by the turn's text:
under the probe policy the related memories shown differ, which this approximation ignores.

    PYTHONPATH=. python experiments/diagnostics/decision_probe.py experiments/quickstart.yaml
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch

from memgym.codecs import Mem0JsonCodec
from memgym.config import load_config
from memgym.engine import Completion
from memgym.envs.memory_manager.baselines import (
    EvidenceKeepPolicy,
    EvidencePolicy,
    NoopPolicy,
    StoreAllPolicy,
)
from memgym.ops import Add, Update
from memgym.rollouts import TokenizedPolicy, run_episodes
from memgym.rollouts.hf import load_model
from memgym.stats import bootstrap_ci, paired_bootstrap_ci
from memgym.train import EVAL_SEED_BASE
from memgym.trainers.warm_start import WARM_START_SEED_BASE

_TURN = re.compile(r"New turn: (.*)\n")
_SHOWN = re.compile(r"^\[(\w+)\] (.*)$", re.MULTILINE)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)); ties broken by order."""
    labels = labels.astype(bool)
    ranks = scores.argsort().argsort() + 1
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def decision_features(model, steps: list, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden state at ``layer`` before the decision token, and the model's own decision logit
    (log p(write token) - log p(empty token)), per step: shapes (N, d) and (N,), float32."""
    write = next(s.completion_ids for s in steps if s.ops)
    empty = next(s.completion_ids for s in steps if not s.ops)
    k = next(i for i, (a, b) in enumerate(zip(write, empty, strict=False)) if a != b)
    features, logits = [], []
    with torch.no_grad():
        for s in steps:
            out = model(torch.tensor([[*s.prompt_ids, *s.completion_ids[:k]]]),
                        output_hidden_states=True)
            features.append(out.hidden_states[layer][0, -1].float().numpy())
            logp = torch.log_softmax(out.logits[0, -1].float(), -1)
            logits.append(float(logp[write[k]] - logp[empty[k]]))
    return np.stack(features), np.array(logits, dtype=np.float32)


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression weights (d,) and bias (1,) minimising mean BCE + ``l2`` * |w|^2."""
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x_t @ w + b, y_t)
                + l2 * (w ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


class _ScoredTurns:
    """Stores the turn verbatim (as store-all) iff ``score(turn) > threshold``."""

    def __init__(self, name: str, score, threshold: float) -> None:
        self.name, self.score, self.threshold = name, score, threshold

    def act(self, observations, infos) -> list[Completion]:
        stored = StoreAllPolicy().act(observations, infos)
        empty = NoopPolicy().act(observations, infos)
        return [s if self.score(o, i) > self.threshold else e
                for s, e, o, i in zip(stored, empty, observations, infos, strict=True)]


class _KeepBest:
    """Keeps the best-scored turns: ADDs while the bank has room (``info["bank_size"] <
    capacity``), then UPDATEs the lowest-scored memory shown with a turn that scores higher. It
    remembers the score of each memory it wrote (by text)."""

    def __init__(self, name: str, score, capacity: int) -> None:
        self.name, self.score, self.capacity = name, score, capacity
        self.written: dict[str, float] = {}
        self.codec = Mem0JsonCodec()

    def act(self, observations, infos) -> list[Completion]:
        out = []
        for observation, info in zip(observations, infos, strict=True):
            fact, score = f"{info['turn']['speaker']}: {info['turn']['text']}", self.score(
                observation, info)
            ops = [Add(fact)] if info["bank_size"] < self.capacity else []
            shown = [(self.written[text], mid) for mid, text in
                     _SHOWN.findall(observation.split("Related memories:")[-1])
                     if text in self.written]
            if not ops and shown and score > min(shown)[0]:
                ops = [Update(min(shown)[1], fact)]
            if ops:
                self.written[fact] = score
            out.append(Completion(self.codec.encode(ops)))
        return out


def main() -> None:
    """Parse arguments, fit the probe, print AUCs and the paired returns."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--layer", type=int, default=15, help="hidden_states index (0: embeddings)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--train-episodes", type=int, default=96)
    parser.add_argument("--val-episodes", type=int, default=48)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.3, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--min-words", type=int, nargs="+", default=[10, 20, 30])
    args = parser.parse_args()
    config = load_config(args.config)
    env_id, train_env = config.env_id, config.env
    val_env = {**train_env, **config.eval_env}
    model, tokenizer = load_model(config.model)
    model.eval()
    teacher = TokenizedPolicy(EvidencePolicy(), tokenizer)
    val_seeds = [EVAL_SEED_BASE + i for i in range(args.val_episodes)]
    data = {}
    for split, env, seeds in (
            ("train", train_env, [WARM_START_SEED_BASE + i for i in range(args.train_episodes)]),
            ("val", val_env, val_seeds)):
        steps = [s for t in run_episodes(env_id, env, teacher, seeds, num_envs=24,
                                         progress=False) for s in t.steps]
        started = time.perf_counter()
        x, own = decision_features(model, steps, args.layer)
        data[split] = (x, own, np.array([bool(s.ops) for s in steps]),
                       [_TURN.search(s.observation).group(1) for s in steps])
        print(f"{split}: {len(steps)} steps, {data[split][2].mean():.1%} written by the teacher, "
              f"{(time.perf_counter() - started) / len(steps):.2f} s per forward")
    x_tr, _, y_tr, _ = data["train"]
    x_va, own_va, y_va, turns_va = data["val"]
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    w, b = fit_probe((x_tr - mean) / std, y_tr, args.l2)
    score_va = (torch.from_numpy((x_va - mean) / std) @ w + b).numpy()
    print(f"validation AUC: probe (layer {args.layer}, l2 {args.l2}) {auc(score_va, y_va):.3f}, "
          f"base model's decision logit {auc(own_va, y_va):.3f}")
    by_turn: dict[str, list[float]] = {}
    for turn, s in zip(turns_va, score_va, strict=True):
        by_turn.setdefault(turn, []).append(float(s))
    probe = {turn: float(np.mean(v)) for turn, v in by_turn.items()}
    def probe_score(observation, _):
        return probe[_TURN.search(observation).group(1)]

    def words(_, info):
        return len(info["turn"]["text"].split())

    policies = [StoreAllPolicy(), EvidencePolicy(), EvidenceKeepPolicy()]
    policies += [_ScoredTurns(f"probe > q{q:g}", probe_score, float(np.quantile(score_va, q)))
                 for q in args.quantiles]
    policies += [_ScoredTurns(f">= {k} words", words, k - 0.5) for k in args.min_words]
    if val_env.get("max_entries"):
        policies += [_KeepBest("probe keep-best", probe_score, val_env["max_entries"]),
                     _KeepBest("words keep-best", words, val_env["max_entries"])]
    returns = {}
    for policy in policies:
        trajectories = run_episodes(env_id, val_env, policy, val_seeds, num_envs=24,
                                    progress=False)
        returns[policy.name] = np.array([t.episode_return for t in trajectories])
    base = returns["store-all"]
    for name, r in returns.items():
        mean_r, low, high = bootstrap_ci(r)
        diff, d_low, d_high = paired_bootstrap_ci(r, base)
        print(f"{name:16s} {mean_r:.3f} [{low:.3f}, {high:.3f}]  paired Δ vs store-all "
              f"{diff:+.3f} [{d_low:+.3f}, {d_high:+.3f}]")


if __name__ == "__main__":
    main()
