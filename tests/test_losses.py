import copy
import math

import pytest
import torch

from memgym.codecs import Mem0JsonCodec
from memgym.codecs.hermes import decode_tool_calls
from memgym.codecs.mem_alpha import MemAlphaCodec
from memgym.errors import ConfigError
from memgym.ops import MemoryInsert, MemorySearch
from memgym.segments import build_segments
from memgym.trainers import (
    LOSS_AGG_MODES,
    GRPOConfig,
    GRPOTrainer,
    SegmentBatch,
    clipped_surrogate,
    kl_divergence,
    token_coefficients,
    update_coefficients,
)
from memgym.trajectory import Segment, Step, Trajectory

LN2 = math.log(2)


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    assert kl_divergence(logp, ref, "k1").item() == pytest.approx(LN2)
    assert kl_divergence(logp, ref, "k3").item() == pytest.approx(0.5 + LN2 - 1)
    assert kl_divergence(logp, ref, "low_var_kl").item() == pytest.approx(0.5 + LN2 - 1)
    # far from the reference: low_var_kl clamps r to 20 and the estimate to 10, k3 does not
    far = kl_divergence(torch.tensor([[-40.0]]), torch.tensor([[-10.0]]), "low_var_kl")
    assert far.item() == 10.0
    assert kl_divergence(torch.tensor([[-40.0]]), torch.tensor([[-10.0]]), "k3").item() > 1e12
    with pytest.raises(ConfigError, match="unknown KL estimator"):
        kl_divergence(logp, ref, "k2")


def test_k3_gradient_is_zero_at_the_reference_and_k1_is_not():
    logp = torch.tensor([[-1.3, -0.2]], requires_grad=True)
    kl_divergence(logp, logp.detach(), "k3").sum().backward()
    assert logp.grad.abs().max().item() == 0.0
    assert kl_divergence(logp, logp.detach() - 1, "k1")[0].tolist() == pytest.approx([1.0, 1.0])


def test_clipped_surrogate_hand_values_and_clip_higher():
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    loss, clipped = clipped_surrogate(ratio.log(), torch.zeros_like(ratio), adv, 0.2, 0.28)
    assert loss[0].tolist() == pytest.approx([-1.28, 1.5, 0.8, -0.5])
    assert clipped.tolist() == [[True, False, True, False]]
    # ρ = 1 (on-policy): the loss is -A and the gradient the policy gradient A·∇logp
    logp = torch.tensor([[-0.7, -2.0]], requires_grad=True)
    loss, _ = clipped_surrogate(logp, logp.detach(), torch.tensor([[2.0], [2.0]])[:1], 0.2, 0.2)
    loss.sum().backward()
    assert loss.tolist() == [[-2.0, -2.0]] and logp.grad.tolist() == [[-2.0, -2.0]]


COUNTS, OWNER = torch.tensor([2, 4, 3]), torch.tensor([0, 0, 1])


@pytest.mark.parametrize(("mode", "weighting", "expected"), [
    ("token-mean", "segment", [1 / 9] * 3),
    ("token-mean", "trajectory", [1 / 9] * 3),
    ("seq-mean-token-sum", "segment", [1 / 3] * 3),
    ("seq-mean-token-sum", "trajectory", [1 / 2] * 3),
    ("seq-mean-token-mean", "segment", [1 / 6, 1 / 12, 1 / 9]),
    ("seq-mean-token-mean", "trajectory", [1 / 12, 1 / 12, 1 / 6]),
    ("seq-mean-token-sum-norm", "segment", [1 / 30] * 3),
    ("seq-mean-token-sum-norm", "trajectory", [1 / 20] * 3),
    ("seq-mean-token-mean", "token", [1 / 9] * 3),
    ("seq-mean-token-sum", "token", [1 / 9] * 3),
])
def test_token_coefficients_hand_values(mode, weighting, expected):
    coef = token_coefficients(COUNTS, OWNER, mode, weighting, norm_length=10)
    assert coef.tolist() == pytest.approx(expected)


def _trajectory_weights(coef, counts, owner):
    return torch.zeros(int(owner.max()) + 1, dtype=coef.dtype).index_add_(
        0, owner, coef * counts).tolist()


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_splitting_a_trajectory_keeps_its_weight_and_loss(mode):
    one = token_coefficients(torch.tensor([6, 3]), torch.tensor([0, 1]), mode, "trajectory", 10)
    split_counts, split_owner = torch.tensor([2, 1, 3, 3]), torch.tensor([0, 0, 0, 1])
    split = token_coefficients(split_counts, split_owner, mode, "trajectory", 10)
    assert _trajectory_weights(split, split_counts, split_owner) == pytest.approx(
        _trajectory_weights(one, torch.tensor([6, 3]), torch.tensor([0, 1])))
    # any per-token losses: the split loss is the unsegmented loss token for token
    tokens = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.0, 1.5, -2.0, 0.7, 0.1])
    per_token_one = torch.repeat_interleave(one, torch.tensor([6, 3]))
    per_token_split = torch.repeat_interleave(split, split_counts)
    assert float((per_token_split * tokens.double()).sum()) == pytest.approx(
        float((per_token_one * tokens.double()).sum()))
    assert per_token_split.tolist() == pytest.approx(per_token_one.tolist())
    # segment weighting does change it (except where every weighting agrees)
    seg = token_coefficients(split_counts, split_owner, mode, "segment", 10)
    if mode != "token-mean":
        assert _trajectory_weights(seg, split_counts, split_owner) != pytest.approx(
            _trajectory_weights(one, torch.tensor([6, 3]), torch.tensor([0, 1])))


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_one_segment_per_trajectory_is_the_unsegmented_loss(mode):
    counts, owner = torch.tensor([5, 1, 7]), torch.tensor([0, 1, 2])
    assert token_coefficients(counts, owner, mode, "trajectory", 10).tolist() == \
        token_coefficients(counts, owner, mode, "segment", 10).tolist()


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("weighting", ["trajectory", "segment", "token"])
def test_updates_keep_each_trajectorys_full_batch_weight(mode, weighting):
    # 3 updates that split trajectory 0 (segments 0, 1, 2) and trajectory 1 (3, 4) apart
    counts, owner = torch.tensor([2, 4, 3, 1, 5, 2]), torch.tensor([0, 0, 0, 1, 1, 2])
    updates = [[0, 3], [1, 5], [2, 4]]
    full = token_coefficients(counts, owner, mode, weighting, 10)
    parts = update_coefficients(counts, owner, updates, mode, weighting, 10)
    per_update = [_trajectory_weights(torch.zeros(6, dtype=torch.float64).index_put_(
        (torch.tensor(u),), c), counts, owner) for u, c in zip(updates, parts, strict=True)]
    totals = torch.tensor(per_update).sum(0)
    assert totals.tolist() == pytest.approx((3 * torch.tensor(
        _trajectory_weights(full, counts, owner))).tolist())
    # coefficients computed per update count a split trajectory once per update it is in
    if mode != "token-mean" and weighting != "token":
        local = [token_coefficients(counts[u], owner[u], mode, weighting, 10) * 3
                 for u in updates]
        local_totals = torch.tensor([_trajectory_weights(torch.zeros(6, dtype=torch.float64)
                                                         .index_put_((torch.tensor(u),), c),
                                                         counts, owner)
                                     for u, c in zip(updates, local, strict=True)]).sum(0)
        assert local_totals.tolist() != pytest.approx(totals.tolist())
    with pytest.raises(ConfigError, match="partition"):
        update_coefficients(counts, owner, [[0, 1], [1, 2, 3, 4, 5]], mode, weighting, 10)


def test_token_coefficients_errors():
    with pytest.raises(ConfigError, match="loss_agg_mode"):
        token_coefficients(COUNTS, OWNER, "sum")
    with pytest.raises(ConfigError, match="weighting"):
        token_coefficients(COUNTS, OWNER, "token-mean", "episode")
    with pytest.raises(ConfigError, match="norm_length"):
        token_coefficients(COUNTS, OWNER, "seq-mean-token-sum-norm")
    with pytest.raises(ConfigError, match="1-D"):
        token_coefficients(COUNTS, OWNER[:2])


def _segments(n):
    """n segments of 2 trajectories-worth of varied lengths (prompt 5-7, completion 2-5)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        p, c = 5 + i % 3, 2 + i % 4
        ids = torch.randint(100, 5000, (p + c,), generator=g).tolist()
        mask = [1] * c
        mask[0] = 0 if i % 4 == 3 else 1  # an env token inside a segment
        out.append(Segment(i, i, i + 1, ids[:p], ids[p:], mask, [0.0] * c, "end"))
    return out


def _grads_after_step(policy, ref, batch, config):
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer = GRPOTrainer(policy, 0, config, ref)
    stats = trainer.step(batch)
    grads = [p.grad.clone() for p in trainer.params]
    policy.load_state_dict(state)
    return stats, grads


@pytest.mark.slow
def test_micro_batch_times_grad_accum_equivalence(smollm2):
    # float64, so that what is compared is the loss's definition, not fp32 summation order
    ref = copy.deepcopy(smollm2[0]).double()
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        policy.model.layers[0].mlp.down_proj.weight.mul_(1.05)  # so the KL term is not 0
    for name, param in policy.named_parameters():  # gradients flow through every layer to these
        param.requires_grad_(name.startswith(("model.layers.0.", "model.norm")))
    segments = _segments(8)
    owner = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3])
    masks = [[1, 0] + [0] * (len(s.completion_ids) - 2) for s in segments]
    batch = SegmentBatch(segments, torch.linspace(-1, 1, 8), owner,
                         memory_advantages=torch.full((8,), 0.3), memory_masks=masks)
    common = {"loss_agg_mode": "seq-mean-token-mean", "weighting": "trajectory", "beta": 0.1,
              "max_grad_norm": 1e9, "learning_rate": 1e-9}
    one_by_eight, g1 = _grads_after_step(policy, ref, batch, GRPOConfig(
        micro_batch=8, grad_accum=1, **common))
    eight_by_one, g8 = _grads_after_step(policy, ref, batch, GRPOConfig(
        micro_batch=1, grad_accum=8, **common))
    assert one_by_eight["updates"] == eight_by_one["updates"] == 1
    assert one_by_eight["kl"] > 0
    for name in ("loss", "kl", "entropy", "adv_mean", "grad_norm"):
        assert eight_by_one[name] == pytest.approx(one_by_eight[name], abs=1e-5, rel=1e-5)
    for a, b in zip(g1, g8, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_resume_from_state_dict_is_exact(smollm2):
    model, _ = smollm2
    config = GRPOConfig(micro_batch=4, learning_rate=1e-3)
    batches = [SegmentBatch(_segments(4), torch.tensor([1.0, -1.0, 0.5, -0.5])),
               SegmentBatch(_segments(4)[::-1], torch.tensor([0.2, -0.2, 1.0, -1.0]))]
    base = copy.deepcopy(model)
    for name, param in base.named_parameters():  # a small trainable part keeps AdamW cheap
        param.requires_grad_(name.startswith("model.layers.29."))
    straight = copy.deepcopy(base)
    trainer = GRPOTrainer(straight, 0, config)
    for b in batches:
        trainer.step(b)
    resumed = copy.deepcopy(base)
    first = GRPOTrainer(resumed, 0, config)
    first.step(batches[0])
    state = copy.deepcopy(first.state_dict())
    second = GRPOTrainer(resumed, 0, config)
    second.load_state_dict(state)
    second.step(batches[1])
    assert second.global_step == trainer.global_step == 2
    assert not torch.equal(straight.model.layers[29].mlp.up_proj.weight,
                           model.model.layers[29].mlp.up_proj.weight)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_several_updates_per_batch_clip(smollm2):
    model, _ = smollm2
    trainer = GRPOTrainer(copy.deepcopy(model), 0, GRPOConfig(
        micro_batch=2, grad_accum=1, learning_rate=1e-3, clip_low=0.01, clip_high=0.01))
    stats = trainer.step(SegmentBatch(_segments(4), torch.tensor([1.0, -1.0, 1.0, -1.0])))
    assert stats["updates"] == 2
    assert 0 < stats["clip_frac"] < 1  # the second update sees ratios moved by the first
    with pytest.raises(ConfigError, match="reference model"):
        GRPOTrainer(model, 0, GRPOConfig(beta=0.1))


def test_codecs_record_memory_op_spans():
    text = 'Sure. {"memory": [{"event": "ADD", "text": "Ann likes tea"}]} ok'
    parsed = Mem0JsonCodec().decode(text)
    (start, end), = parsed.spans
    assert text[start:end] == '{"memory": [{"event": "ADD", "text": "Ann likes tea"}]}'
    call = '{"name": "new_memory_insert", "arguments": {"memory_type": "core", "content": "x"}}'
    text = f"think <tool_call>{call}</tool_call>"
    (start, end), = MemAlphaCodec().decode(text).spans
    assert text[start:end] == call
    assert Mem0JsonCodec().decode("no json").spans == ()
    tools = {"search": lambda a: MemorySearch("facts", a["q"]),  # a read: no payload span
             "insert": lambda a: MemoryInsert("core", a["text"])}
    insert = '{"name": "insert", "arguments": {"text": "Ann likes tea"}}'
    text = ('<tool_call>{"name": "search", "arguments": {"q": "tea"}}</tool_call>'
            f"<tool_call>{insert}</tool_call>")
    parsed = decode_tool_calls(text, tools)
    assert [type(op) for op in parsed.ops] == [MemorySearch, MemoryInsert]
    (start, end), = parsed.spans
    assert text[start:end] == insert


def test_memory_masks_mark_the_payload_tokens_and_feed_memory_credit(smollm2):
    """Masks made at rollout from the tokens' character offsets (as the engines give them)
    mark exactly the op payloads; the segment adds 0s for env tokens; GRPO uses them."""
    from memgym.rollouts.chat import token_offsets
    from memgym.rollouts.runner import memory_token_mask

    _, tok = smollm2
    first = 'Sure. {"memory": [{"event": "ADD", "text": "Ann likes tea"}]}'
    second = 'Then {"memory": []} é'
    prompt = tok("Remember this:")["input_ids"]
    ids1 = tok(first, add_special_tokens=False)["input_ids"]
    inserted = tok(" next turn", add_special_tokens=False)["input_ids"]
    ids2 = tok(second, add_special_tokens=False)["input_ids"]
    steps = [
        Step(0, "", first, prompt_ids=prompt, completion_ids=ids1, logprobs=[0.0] * len(ids1),
             op_spans=[list(s) for s in Mem0JsonCodec().decode(first).spans]),
        Step(1, "", second, prompt_ids=prompt + ids1 + inserted, completion_ids=ids2,
             logprobs=[0.0] * len(ids2),
             op_spans=[list(s) for s in Mem0JsonCodec().decode(second).spans])]
    for step in steps:
        step.memory_mask = memory_token_mask(token_offsets(tok, step.completion_ids),
                                             step.op_spans)
    (segment,) = build_segments(steps)
    mask = segment.memory_mask
    assert len(mask) == len(segment.completion_ids)
    picked = tok.decode([t for t, m in zip(segment.completion_ids, mask, strict=True) if m])
    assert picked.replace(" ", "") == ('{"memory":[{"event":"ADD","text":"Annlikestea"}]}'
                                       '{"memory":[]}')
    # the inserted env tokens are never memory tokens
    assert mask[len(ids1):len(ids1) + len(inserted)] == [0] * len(inserted)
    trajs = [Trajectory("x", 0, {}, "p", steps, segments=[segment]) for _ in range(2)]
    trajs[1].steps = [copy.copy(s) for s in steps]
    trajs[0].steps[0].reward_terms = {"qa": 1.0}
    batch = SegmentBatch.from_trajectories(trajs, GRPOConfig(memory_terms=["qa"]))
    assert batch.memory_masks == [mask, mask]
    # memory returns (1, 0) in one group → ±1/√2; episode returns are equal → 0
    assert batch.memory_advantages.tolist() == pytest.approx([2**-0.5, -(2**-0.5)], rel=1e-5)
    assert batch.advantages.tolist() == [0.0, 0.0]
