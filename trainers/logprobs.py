"""Token logprobs of segments under a model at the sampling temperature, and the behaviour
policy's logprobs (trainer recompute or sampler) with truncated importance sampling.

Both trainers score completions with :func:`completion_logprobs` in one path: the same packing
(:func:`pack_segments`), the same mode and the same temperature for the old (behaviour), new
and reference logprobs, so that with one update per batch ``ρ = exp(logp - logp_old)`` is 1 and
the loss optimises the policy that sampled, ``softmax(logits / T)`` (TRL fixed computing them at
temperature 1 while sampling at ``T ≠ 1`` in huggingface/trl#3029).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.utils.checkpoint
from transformers import PreTrainedModel

from memgym.batch import check_temperature
from memgym.errors import ConfigError
from memgym.trajectory import Segment


def pack_segments(segments: list[Segment], pad_id: int,
                  memory_masks: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Left-pad prompts and right-pad completions so every completion starts at column P.

    Args:
        segments: B segments.
        pad_id: Padding token id.
        memory_masks: B lists of C_s {0, 1} memory-token flags, or None.

    Returns:
        ``input_ids``, ``attention_mask``, ``position_ids`` ``(B, P + C)`` int64;
        ``loss_mask`` (and ``memory_mask``) ``(B, C)`` float32; ``completion_len`` C (int, 0
        when every completion is empty).
    """
    p = max(len(s.prompt_ids) for s in segments)
    c = max(len(s.completion_ids) for s in segments)
    ids, attn, mask = [], [], []
    for s in segments:
        lp, lc = len(s.prompt_ids), len(s.completion_ids)
        ids.append([pad_id] * (p - lp) + s.prompt_ids + s.completion_ids + [pad_id] * (c - lc))
        attn.append([0] * (p - lp) + [1] * (lp + lc) + [0] * (c - lc))
        mask.append(list(s.loss_mask) + [0] * (c - lc))
    attention = torch.tensor(attn)
    packed = {"input_ids": torch.tensor(ids), "attention_mask": attention,
              "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
              "loss_mask": torch.tensor(mask, dtype=torch.float32).reshape(len(segments), c),
              "completion_len": c}
    if memory_masks is not None:
        packed["memory_mask"] = torch.tensor([m + [0] * (c - len(m)) for m in memory_masks],
                                             dtype=torch.float32).reshape(len(segments), c)
    return packed


#: Tokens per chunk of the LM head are chosen so that one chunk's logits hold about this many
#: elements (2^27: 512 MiB in float32, 883 tokens of a 151,936-token vocabulary).
CHUNK_ELEMENTS = 1 << 27

#: Config attributes of models whose logits are not ``lm_head(last hidden state)`` (Gemma 2/3
#: softcapping, Cohere's scale, Granite's divisor): those take the full-vocabulary path.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def completion_logprobs(model: PreTrainedModel, packed: dict[str, torch.Tensor],
                        entropy: bool = False, temperature: float = 1.0,
                        chunk_tokens: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob (and optionally entropy, no gradient) of each completion token under
    ``softmax(logits / temperature)``, the distribution the rollouts sampled from.

    The full-vocabulary logits of the completion, ``(B, C, V)`` in float32, are never
    materialised (they dominate peak memory: 10 GiB at 16×1024 tokens of a 151,936-token
    vocabulary): one forward pass gives the last hidden states, and the LM head, the division
    by T and the log-softmax run over the completion's real tokens (right-padding skipped) in
    chunks of ``chunk_tokens``, each under :func:`torch.utils.checkpoint.checkpoint`, so the
    backward pass recomputes a chunk's logits instead of keeping them. The head runs inside the
    model's call (a forward hook), so DDP, FSDP2 and peft wrappers see an ordinary forward.
    Models whose logits are not ``lm_head(hidden)`` (:data:`LOGIT_TRANSFORMS`, or a head that
    does not reproduce the forward's last logits) take the full-vocabulary path.

    Args:
        model: A causal LM (plain, peft, DDP- or FSDP2-wrapped).
        packed: A batch from :func:`pack_segments`.
        entropy: Also return the per-token entropy ``-Σ_v p_v log p_v`` (no gradient).
        temperature: The sampling temperature T > 0 (see :func:`memgym.batch.training_temperature`).
        chunk_tokens: Tokens per LM-head chunk; default ``CHUNK_ELEMENTS // V`` (at least 1).

    Returns:
        ``(B, C)`` logprobs (float32, or float64 for a float64 model) and ``(B, C)`` entropies
        in nats or None (both garbage where ``loss_mask`` is 0; 0 at right-padding).

    Raises:
        ConfigError: ``temperature`` is not a finite float > 0, or ``chunk_tokens`` < 1.
    """
    check_temperature(temperature)
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    head = inner.get_output_embeddings()
    config = getattr(inner, "config", None)
    if (head is None or any(getattr(config, name, None) is not None for name in LOGIT_TRANSFORMS)
            or hasattr(getattr(head, "weight", None), "ds_status")):  # a DeepSpeed model
        return full_vocab_logprobs(model, packed, entropy, temperature)
    found: dict[str, tuple[torch.Tensor, torch.Tensor | None] | None] = {}

    def chunked(module: torch.nn.Module, args: tuple, output) -> tuple:
        found["result"] = _hidden_logprobs(head, output, packed, entropy, temperature,
                                           chunk_tokens)
        return output, found["result"]  # outputs of the call: FSDP2 hooks their backward

    # prepend: before FSDP2's post-forward hook reshards the root's parameters (the LM head)
    handle = model.register_forward_hook(chunked, prepend=True)
    try:
        model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
              position_ids=packed["position_ids"], logits_to_keep=1, use_cache=False,
              output_hidden_states=True)
    finally:
        handle.remove()
    if found["result"] is None:  # the head does not give the model's logits
        return full_vocab_logprobs(model, packed, entropy, temperature)
    return found["result"]


def _hidden_logprobs(head: torch.nn.Module, output, packed: dict[str, torch.Tensor],
                     entropy: bool, temperature: float, chunk_tokens: int | None
                     ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Chunked completion logprobs from a forward's ``hidden_states`` (``logits_to_keep=1``).

    Args:
        head: The LM head module, ``(N, H) -> (N, V)``.
        output: The model's output with ``logits`` ``(B, 1, V)`` and ``hidden_states``, the
            last ``(B, P + C, H)`` after the final norm.
        packed: A batch from :func:`pack_segments`.
        entropy: Also compute the entropies.
        temperature: T > 0.
        chunk_tokens: Tokens per chunk, or None for ``CHUNK_ELEMENTS // V``.

    Returns:
        ``(B, C)`` logprobs and entropies (or None), 0 at right-padding; None when
        ``head(last hidden state)`` is not the model's last logits.
    """
    c, ids = packed["completion_len"], packed["input_ids"]
    hidden = output.hidden_states[-1]
    cast = _head_precision(head, hidden[:, -1:], output.logits)
    if cast is False:
        return None
    b, width = ids.shape[0], ids.shape[1]
    real = packed["attention_mask"][:, width - c:].reshape(-1).nonzero().squeeze(1)  # (N,)
    states = hidden[:, -(c + 1):-1].reshape(b * c, hidden.shape[-1]).index_select(0, real)
    targets = ids[:, width - c:].reshape(-1).index_select(0, real)  # (N,)
    size = chunk_tokens or max(1, CHUNK_ELEMENTS // output.logits.shape[-1])
    grad = torch.is_grad_enabled() and states.requires_grad
    with _autocast(hidden.device.type, cast):  # checkpoint recomputes under the same state
        parts = [torch.utils.checkpoint.checkpoint(_chunk_logprobs, head, states[i:i + size],
                                                   targets[i:i + size], temperature, entropy,
                                                   use_reentrant=False) if grad else
                 _chunk_logprobs(head, states[i:i + size], targets[i:i + size], temperature,
                                 entropy)
                 for i in range(0, max(len(real), 1), size)]  # an empty chunk keeps the graph
    logp = torch.cat([p[0] for p in parts])
    logp = logp.new_zeros(b * c).index_copy(0, real, logp).view(b, c)
    if not entropy:
        return logp, None
    ent = torch.cat([p[1] for p in parts])
    return logp, ent.new_zeros(b * c).index_copy(0, real, ent).view(b, c)


def _autocast(device_type: str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype``, or no change for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def _head_precision(head: torch.nn.Module, hidden: torch.Tensor, logits: torch.Tensor
                    ) -> torch.dtype | bool | None:
    """The autocast dtype under which ``head(hidden)`` reproduces the model's ``logits``: None
    (as it is), ``bfloat16`` / ``float16`` (Accelerate's mixed precision wraps the model's
    inner forward in autocast, which a forward hook runs outside of), or False when no
    precision does (a head that is not the model's logits: use the full-vocabulary path).

    Args:
        hidden: ``(B, 1, H)`` the last position's hidden states.
        logits: ``(B, 1, V)`` the model's logits there.
    """
    with torch.no_grad():
        for dtype in (None, torch.bfloat16, torch.float16):
            with _autocast(hidden.device.type, dtype):
                last = head(hidden)
            if last.shape == logits.shape and torch.allclose(
                    last.float(), logits.float(), rtol=1e-3, atol=1e-4):
                return dtype
    return False


def _chunk_logprobs(head: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor,
                    temperature: float, entropy: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprobs (and entropies, no gradient) of ``targets`` after ``states`` at temperature T.

    Args:
        head: The LM head, ``(n, H) -> (n, V)``.
        states: ``(n, H)`` last hidden states (the positions before the targets).
        targets: ``(n,)`` int64 token ids.
        temperature: T > 0: logprobs of ``softmax(head(states) / T)``.
        entropy: Also return the entropies.

    Returns:
        ``(n,)`` logprobs (float32, float64 for a float64 head) and ``(n,)`` entropies or None.
    """
    return logits_logprobs(head(states), targets, temperature, entropy)


def logits_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                    entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprobs of ``targets`` under ``softmax(logits / T)`` (fp32 or wider), and entropies.

    Args:
        logits: ``(..., V)`` logits (bf16 / fp16 are computed in float32, fp64 kept).
        targets: ``(...)`` int64 token ids.
        temperature: T > 0.
        entropy: Also return the entropies (no gradient).

    Returns:
        ``(...)`` logprobs and ``(...)`` entropies or None.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    all_logp = torch.log_softmax(logits, -1)
    logp = all_logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return logp, None
    with torch.no_grad():
        return logp, -(all_logp.exp() * all_logp).sum(-1)


def full_vocab_logprobs(model: PreTrainedModel, packed: dict[str, torch.Tensor],
                        entropy: bool = False, temperature: float = 1.0
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`completion_logprobs` through the model's own ``(B, C + 1, V)`` logits (for
    models whose logits are not ``lm_head(hidden)``; peak memory holds the full-vocabulary
    float32 log-softmax).

    Args:
        model: A causal LM.
        packed: A batch from :func:`pack_segments`.
        entropy: Also return the per-token entropy (no gradient).
        temperature: The sampling temperature T > 0.

    Returns:
        ``(B, C)`` logprobs and entropies or None, as :func:`completion_logprobs`.
    """
    c = packed["completion_len"]
    logits = model(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                   position_ids=packed["position_ids"], logits_to_keep=c + 1,
                   use_cache=False).logits[:, :-1]
    targets = packed["input_ids"][:, packed["input_ids"].shape[1] - c:]
    return logits_logprobs(logits, targets, temperature, entropy)


def sampler_logprobs(segments: list[Segment], width: int) -> torch.Tensor:
    """The sampler's logprobs of the segments' completion tokens, right-padded with 0.

    Args:
        segments: B segments whose ``logprobs`` the engine recorded.
        width: Columns C ≥ every completion's length.

    Returns:
        ``(B, C)`` float64 (cast it to the logprobs' dtype).

    Raises:
        ConfigError: A segment's logprobs do not cover its completion (e.g. a scripted policy's
            trajectory, or one loaded without them), or one is not finite at a policy token.
    """
    rows = []
    for s in segments:
        if len(s.logprobs) != len(s.completion_ids):
            raise ConfigError(f"segment {s.index} has {len(s.logprobs)} sampler logprobs for "
                              f"{len(s.completion_ids)} completion tokens; "
                              f"behaviour_logprobs 'sampler' and tis_cap need them")
        if not all(math.isfinite(lp) for lp, m in zip(s.logprobs, s.loss_mask, strict=True)
                   if m):
            raise ConfigError(f"segment {s.index} has non-finite sampler logprobs")
        rows.append(list(s.logprobs) + [0.0] * (width - len(s.logprobs)))
    return torch.tensor(rows, dtype=torch.float64).reshape(len(segments), width)


def truncated_is_weights(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """Truncated importance weights of the trainer's behaviour policy against the sampler's.

    ``w = min(exp(logp_trainer - logp_sampler), cap)``, detached (Yao et al. 2025, "Your
    Efficient RL Framework Secretly Brings You Off-Policy RL Training"; verl's
    ``tis_imp_ratio_cap``, prime-rl): it corrects the policy gradient for tokens the engine
    sampled with a slightly different distribution (vLLM in bf16 against a trainer in fp32)
    than the one the trainer scores.

    Args:
        trainer_logprobs: ``(B, C)`` the trainer's logprobs of the sampled tokens before any
            update (the ratio's ``logp_old``).
        sampler_logprobs: ``(B, C)`` the sampler's logprobs of the same tokens.
        cap: Upper bound of the weight (> 0; verl uses 2).

    Returns:
        ``(B, C)`` weights, no gradient, dtype of ``trainer_logprobs``.
    """
    delta = (trainer_logprobs.detach() - sampler_logprobs.to(trainer_logprobs.dtype))
    return torch.exp(delta).clamp(max=cap)
