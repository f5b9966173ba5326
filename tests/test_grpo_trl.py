"""memgym's GRPO loss equals TRL 1.16 GRPOTrainer's on the same samples and settings, off-policy,
at a temperature ≠ 1 and with trajectories cut into segments; and the comparison fails when the
loss is mutated.

One batch (2 prompts × 4 completions of 2-6 tokens) goes through TRL's ``_compute_loss`` (its
loss without generation; TRL built with ``temperature=0.7``, so its fused LM head divides the
logits by 0.7) and through :meth:`memgym.trainers.GRPOTrainer.step` (``SegmentBatch`` at
temperature 0.7). The behaviour logprobs differ from the policy's by a fixed pattern, so the
ratios fall on both sides of both clip bounds (TRL: ``old_per_token_logps``; memgym: the
segments' sampler logprobs with ``behaviour_logprobs: sampler``). On memgym's side three of the
eight trajectories are cut into 2 segments (the second's prompt is the first's prompt +
completion) with ``trajectory`` weighting; TRL sees them unsegmented. Losses and gradients must
agree for each TRL ``loss_type`` and its memgym ``loss_agg_mode``, with and without the k3 KL
term (the reference's logprobs at 0.7, computed by hand for TRL). :func:`compare` is the parity
check; :func:`test_parity_fails_under_each_mutation` applies each mutation of the loss and
expects it to fail.
"""

import copy
import itertools

import pytest
import torch

import memgym.trainers.grpo as grpo
from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch, grpo_advantages
from memgym.trajectory import Segment

pytestmark = pytest.mark.slow

GROUP, PROMPTS, MAX_LEN, PROMPT_LEN, TEMPERATURE = 4, 2, 6, 5, 0.7
CLIP_LOW, CLIP_HIGH = 0.2, 0.28
SPLIT = {1: 2, 3: 3, 6: 2}  # trajectory → length of its first segment's completion
# log ρ per token, cycled: ρ = 0.55, 0.76 (in [0.72, 0.8): low bound swapped changes it),
# 1.23 (in (1.2, 1.28]: high bound swapped changes it), 1.73, 0.90, 1.08
LOG_RATIOS = (-0.6, -0.27, 0.21, 0.55, -0.1, 0.08)
TRL_TO_MEMGYM = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
                 "dr_grpo": "seq-mean-token-sum-norm"}


def _trainable(model):
    for name, param in model.named_parameters():  # a small part keeps the test fast
        param.requires_grad_(name.startswith(("model.layers.0.", "model.norm")))
    return model


@torch.no_grad()
def _logprobs(model, prompt_ids, completion_ids, completion_mask):
    """``(B, MAX_LEN)`` log softmax(logits / T) of the completions, by hand (not memgym's)."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, PROMPT_LEN - 1:-1]
    logp = torch.log_softmax(logits.float() / TEMPERATURE, -1)
    return logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def _segments(prompts, completions, old, advantages):
    """memgym's side: each completion one trajectory, those in SPLIT cut into two segments."""
    segments, owner, adv = [], [], []
    for i, ids in enumerate(completions):
        prompt, logps = prompts[i // GROUP], old[i, :len(ids)].tolist()
        cuts = [0, SPLIT[i], len(ids)] if i in SPLIT else [0, len(ids)]
        for k, (a, b) in enumerate(itertools.pairwise(cuts)):
            segments.append(Segment(k, k, k + 1, prompt + ids[:a], ids[a:b], [1] * (b - a),
                                    logps[a:b], "end"))
            owner.append(i)
            adv.append(float(advantages[i]))
    return SegmentBatch(segments, torch.tensor(adv), torch.tensor(owner),
                        temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def setup(smollm2, tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    model, tok = smollm2
    ref = model
    policy = copy.deepcopy(model)
    with torch.no_grad():
        policy.model.layers[1].mlp.down_proj.weight.mul_(1.05)  # so that KL(π || ref) > 0
    _trainable(policy)
    trl_model = copy.deepcopy(policy)
    args = TRLConfig(output_dir=str(tmp_path_factory.mktemp("trl")), use_cpu=True,
                     per_device_train_batch_size=GROUP * PROMPTS, num_generations=GROUP,
                     max_completion_length=MAX_LEN, temperature=TEMPERATURE, beta=0.0,
                     epsilon=CLIP_LOW, epsilon_high=CLIP_HIGH,
                     report_to="none", bf16=False, logging_steps=1,
                     use_bias_correction_kl=False)  # memgym's k3 loss has no IS-weighted KL
    trl = TRLTrainer(model=trl_model, reward_funcs=lambda completions, **_: [0.0] * len(
        completions), args=args, train_dataset=Dataset.from_dict({"prompt": ["hi"] * 8}),
        processing_class=tok)
    g = torch.Generator().manual_seed(1)
    prompts = [tok(text)["input_ids"][:PROMPT_LEN] for text in (
        "Remember: Ann likes tea and cake.", "Store this: Bob moved to Oslo now.")]
    completions, comp, comp_mask = [], [], []
    for i in range(PROMPTS * GROUP):
        n = 2 + (i * 3) % (MAX_LEN - 1)  # 2..6 tokens
        ids = torch.randint(100, 5000, (n,), generator=g).tolist()
        completions.append(ids)
        comp.append(ids + [tok.pad_token_id] * (MAX_LEN - n))
        comp_mask.append([1] * n + [0] * (MAX_LEN - n))
    prompt_ids = torch.tensor([prompts[i // GROUP] for i in range(PROMPTS * GROUP)])
    comp, comp_mask = torch.tensor(comp), torch.tensor(comp_mask)
    rewards = torch.rand(PROMPTS * GROUP, generator=g, dtype=torch.float64)
    groups = torch.arange(PROMPTS).repeat_interleave(GROUP)
    # TRL's formula (test_advantages checks it), shifted: zero-mean advantages would make the
    # seq-mean losses 0 whatever the logprobs
    advantages = grpo_advantages(rewards, groups, eps=1e-4).float() + 0.3
    log_ratio = torch.tensor([[LOG_RATIOS[(i * 7 + j) % len(LOG_RATIOS)] for j in range(MAX_LEN)]
                              for i in range(PROMPTS * GROUP)])
    old = _logprobs(policy, prompt_ids, comp, comp_mask) - log_ratio
    # both clip bounds are active, and tokens sit between the bounds and their swaps
    ratio, a, m = log_ratio.exp(), advantages[:, None], comp_mask.bool()
    for region in ((a > 0) & (ratio > 1 + CLIP_HIGH), (a < 0) & (ratio < 1 - CLIP_HIGH),
                   (a > 0) & (ratio > 1.2) & (ratio < 1.28),
                   (a < 0) & (ratio > 0.72) & (ratio < 0.8)):
        assert (region & m).any()
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
              "completion_ids": comp, "completion_mask": comp_mask, "advantages": advantages,
              "num_items_in_batch": comp_mask.sum(), "old_per_token_logps": old,
              "ref_per_token_logps": _logprobs(ref, prompt_ids, comp, comp_mask)}
    return {"trl": trl, "trl_model": trl_model, "policy": policy, "ref": ref, "tok": tok,
            "inputs": inputs, "batch": _segments(prompts, completions, old, advantages)}


def compare(setup, loss_type: str, beta: float) -> dict[str, float]:
    """TRL's and memgym's loss on the setup's batch, and their gradients' relative distance.

    Returns:
        ``trl_loss``, ``loss``, ``grad_distance`` (‖g_memgym − g_trl‖ / ‖g_trl‖), ``kl``.
    """
    trl, trl_model = setup["trl"], setup["trl_model"]
    trl.loss_type, trl.beta = loss_type, beta
    trl_model.eval()  # TRL's eval mode: no division by gradient-accumulation steps
    trl_model.zero_grad(set_to_none=True)
    trl_loss = trl._compute_loss(trl_model, setup["inputs"])
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in trl_model.parameters() if p.requires_grad]

    policy = setup["policy"]
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    config = GRPOConfig(loss_agg_mode=TRL_TO_MEMGYM[loss_type], norm_length=MAX_LEN,
                        weighting="trajectory", beta=beta, kl_estimator="k3", kl_mode="loss",
                        clip_low=CLIP_LOW, clip_high=CLIP_HIGH, behaviour_logprobs="sampler",
                        micro_batch=3, max_grad_norm=1e9)
    ours = GRPOTrainer(policy, setup["tok"].pad_token_id, config,
                       setup["ref"] if beta else None)
    stats = ours.step(setup["batch"])
    grads = [p.grad.clone() for p in ours.params]
    policy.load_state_dict(state)
    ours_flat, trl_flat = (torch.cat([g.flatten() for g in gs]) for gs in (grads, trl_grads))
    return {"trl_loss": trl_loss.item(), "loss": stats["loss"], "kl": stats["kl"],
            "clip_frac": stats["clip_frac"],
            "grad_distance": float((ours_flat - trl_flat).norm() / trl_flat.norm())}


def agrees(result: dict[str, float]) -> bool:
    """The parity criterion: equal losses (rel 1e-4) and gradients within 5e-4 of their norm.

    TRL scores tokens with its fused, chunked LM head (own backward); a plain log_softmax
    differs from it by ~1e-4 of the gradient norm even in float64, so that is the tolerance.
    With transformers 5.23 the float32 losses differ by 1.5e-5 (relative) and the gradients by
    4-6e-5; the weakest mutation below moves the loss by 7.8e-3 and the gradient by 0.42.
    """
    return (result["loss"] == pytest.approx(result["trl_loss"], rel=1e-4, abs=1e-7)
            and result["grad_distance"] < 5e-4)


@pytest.mark.parametrize(("loss_type", "beta"), [("grpo", 0.04), ("dapo", 0.0),
                                                  ("dr_grpo", 0.04), ("bnpo", 0.0)])
def test_same_loss_and_gradient_as_trl(setup, loss_type, beta):
    result = compare(setup, loss_type, beta)
    assert agrees(result), result
    assert (result["kl"] > 0) == (beta > 0)
    assert 0 < result["clip_frac"] < 1


# the functions under test, before any mutation replaces them in memgym.trainers.grpo
REAL = {name: getattr(grpo, name)
        for name in ("clipped_surrogate", "completion_logprobs", "update_coefficients")}


def _no_clip(logprobs, old_logprobs, advantages, clip_low=0.2, clip_high=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    return -ratio * advantages, torch.zeros_like(ratio, dtype=torch.bool)


def _max_not_min(logprobs, old_logprobs, advantages, clip_low=0.2, clip_high=0.2):
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped, clipped = ratio * advantages, ratio.clamp(1 - clip_low, 1 + clip_high) * advantages
    return -torch.max(unclipped, clipped), (clipped > unclipped).detach()


def _bounds_swapped(logprobs, old_logprobs, advantages, clip_low=0.2, clip_high=0.2):
    return REAL["clipped_surrogate"](logprobs, old_logprobs, advantages, clip_high, clip_low)


def _temperature_ignored(model, packed, entropy=False, temperature=1.0):
    return REAL["completion_logprobs"](model, packed, entropy)


def _segment_weighting(counts, owner, updates, mode="token-mean", weighting="trajectory",
                       norm_length=None):
    return REAL["update_coefficients"](counts, owner, updates, mode, "segment", norm_length)


MUTATIONS = {"clip removed": ("clipped_surrogate", _no_clip),
             "clip bounds swapped": ("clipped_surrogate", _bounds_swapped),
             "min -> max": ("clipped_surrogate", _max_not_min),
             "temperature ignored": ("completion_logprobs", _temperature_ignored),
             "segment weighting": ("update_coefficients", _segment_weighting)}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_parity_fails_under_each_mutation(setup, monkeypatch, mutation):
    name, mutant = MUTATIONS[mutation]
    monkeypatch.setattr(grpo, name, mutant)
    result = compare(setup, "grpo", 0.04)
    assert not agrees(result), (mutation, result)
