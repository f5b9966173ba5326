"""memgym's GRPO loss equals TRL 1.16 GRPOTrainer's on the same samples and settings.

One single-turn batch (2 prompts × 4 completions, each completion one one-segment trajectory)
goes through TRL's ``_compute_loss`` (its loss without generation) and through
:meth:`memgym.trainers.GRPOTrainer.step`; losses and gradients must agree for each TRL
``loss_type`` and its memgym ``loss_agg_mode``, with and without the k3 KL term.
"""

import copy

import pytest
import torch

from memgym.trainers import GRPOConfig, GRPOTrainer, SegmentBatch, grpo_advantages
from memgym.trainers.grpo import completion_logprobs, pack_segments
from memgym.trajectory import Segment

pytestmark = pytest.mark.slow

GROUP, PROMPTS, MAX_LEN = 4, 2, 6
TRL_TO_MEMGYM = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
                 "dr_grpo": "seq-mean-token-sum-norm"}


def _trainable(model):
    for name, param in model.named_parameters():  # a small part keeps the test fast
        param.requires_grad_(name.startswith(("model.layers.0.", "model.norm")))
    return model


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
                     max_completion_length=MAX_LEN, temperature=1.0, beta=0.0,
                     report_to="none", bf16=False, logging_steps=1,
                     use_bias_correction_kl=False)  # memgym's k3 loss has no IS-weighted KL
    trl = TRLTrainer(model=trl_model, reward_funcs=lambda completions, **_: [0.0] * len(
        completions), args=args, train_dataset=Dataset.from_dict({"prompt": ["hi"] * 8}),
        processing_class=tok)
    g = torch.Generator().manual_seed(1)
    prompts = [tok(text)["input_ids"][:5] for text in ("Remember: Ann likes tea and cake.",
                                                       "Store this: Bob moved to Oslo now.")]
    segments, comp, comp_mask = [], [], []
    for i in range(PROMPTS * GROUP):
        n = 2 + (i * 3) % (MAX_LEN - 1)  # 2..6 tokens
        ids = torch.randint(100, 5000, (n,), generator=g).tolist()
        segments.append(Segment(0, 0, 1, prompts[i // GROUP], ids, [1] * n, [0.0] * n, "end"))
        comp.append(ids + [tok.pad_token_id] * (MAX_LEN - n))
        comp_mask.append([1] * n + [0] * (MAX_LEN - n))
    rewards = torch.rand(PROMPTS * GROUP, generator=g, dtype=torch.float64)
    groups = torch.arange(PROMPTS).repeat_interleave(GROUP)
    # TRL's formula (test_advantages checks it), shifted: zero-mean advantages would make the
    # seq-mean losses 0 whatever the logprobs
    advantages = grpo_advantages(rewards, groups, eps=1e-4).float() + 0.3
    with torch.no_grad():
        ref_logps, _ = completion_logprobs(ref, pack_segments(segments, tok.pad_token_id))
    inputs = {"prompt_ids": torch.tensor([s.prompt_ids for s in segments]),
              "prompt_mask": torch.ones(len(segments), 5, dtype=torch.long),
              "completion_ids": torch.tensor(comp), "completion_mask": torch.tensor(comp_mask),
              "advantages": advantages, "num_items_in_batch": torch.tensor(comp_mask).sum(),
              "ref_per_token_logps": ref_logps}
    return {"trl": trl, "trl_model": trl_model, "policy": policy, "ref": ref, "tok": tok,
            "inputs": inputs, "batch": SegmentBatch(segments, advantages)}


@pytest.mark.parametrize(("loss_type", "beta"), [("grpo", 0.04), ("dapo", 0.0),
                                                  ("dr_grpo", 0.04), ("bnpo", 0.0)])
def test_same_loss_and_gradient_as_trl(setup, loss_type, beta):
    trl, trl_model = setup["trl"], setup["trl_model"]
    trl.loss_type, trl.beta, trl.epsilon_low, trl.epsilon_high = loss_type, beta, 0.2, 0.28
    trl_model.eval()  # TRL's eval mode: no division by gradient-accumulation steps
    trl_model.zero_grad(set_to_none=True)
    trl_loss = trl._compute_loss(trl_model, setup["inputs"])
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in trl_model.parameters() if p.requires_grad]

    policy = setup["policy"]
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    config = GRPOConfig(loss_agg_mode=TRL_TO_MEMGYM[loss_type], norm_length=MAX_LEN,
                        weighting="trajectory", beta=beta, kl_estimator="k3", kl_mode="loss",
                        clip_low=0.2, clip_high=0.28, micro_batch=3, max_grad_norm=1e9)
    ours = GRPOTrainer(policy, setup["tok"].pad_token_id, config,
                       setup["ref"] if beta else None)
    stats = ours.step(setup["batch"])
    grads = [p.grad.clone() for p in ours.params]
    policy.load_state_dict(state)

    assert stats["loss"] == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-7)
    assert (stats["kl"] > 0) == (beta > 0)
    # TRL scores tokens with its fused, chunked LM head (own backward); a plain log_softmax
    # differs from it by ~1e-4 of the gradient norm even in float64, so that is the tolerance
    ours_flat, trl_flat = (torch.cat([g.flatten() for g in gs]) for gs in (grads, trl_grads))
    assert float((ours_flat - trl_flat).norm() / trl_flat.norm()) < 5e-4
