"""The critic: a separate value model with a scalar head on every token.

PPO for LLMs in verl and in TRL's former ``PPOTrainer`` keeps the critic as its own model (the
policy's backbone copied, plus a ``Linear(hidden, 1)`` score head) rather than a head on the
policy: the two train with their own learning rates (Memory-R1: actor 1e-6, critic 1e-5) and
optimizers, and value gradients never disturb the policy. transformers'
``AutoModelForTokenClassification(num_labels=1)`` is exactly that model, as in verl.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForTokenClassification, PreTrainedModel

from memgym.errors import ConfigError


def value_model_from_policy(policy: PreTrainedModel) -> PreTrainedModel:
    """A critic initialized from a causal-LM policy: its backbone weights, a zero score head.

    The zero head makes every value 0 at the start (no random bias in the first advantages)
    and the initialization deterministic; the head's dropout is off so the value of a token
    does not depend on the batch it is computed in.

    Args:
        policy: A plain (not peft-wrapped) transformers causal LM, e.g. SmolLM2.

    Returns:
        A ``*ForTokenClassification`` model with ``num_labels=1``, same dtype as ``policy``,
        in train mode; ``model(...).logits`` is ``(B, L, 1)``.

    Raises:
        ConfigError: ``policy`` has no backbone that token classification can reuse.
    """
    config = copy.deepcopy(policy.config)
    config.num_labels, config.classifier_dropout = 1, 0.0
    try:  # on the meta device: every weight is copied or zeroed below, so skip the random init
        with torch.device("meta"):
            critic = AutoModelForTokenClassification.from_config(config, dtype=policy.dtype)
    except ValueError as exc:
        raise ConfigError(f"no token-classification model for {type(policy).__name__}: "
                          f"pass a value model explicitly ({exc})") from exc
    if type(critic.base_model) is not type(policy.base_model):
        raise ConfigError(f"expected a plain causal LM whose backbone the critic can copy, got "
                          f"{type(policy).__name__} (backbone {type(policy.base_model).__name__})")
    critic.to_empty(device=policy.device)  # allocated, not initialised
    backbone = critic.base_model
    backbone.load_state_dict(policy.base_model.state_dict())
    with torch.no_grad():
        for name, buffer in policy.base_model.named_buffers():  # non-persistent ones too (RoPE)
            backbone.get_buffer(name).copy_(buffer)
        own = {id(t) for t in (*backbone.parameters(), *backbone.buffers())}
        for tensor in (*critic.parameters(), *critic.buffers()):  # the score head
            if id(tensor) not in own:
                tensor.zero_()
    return critic.train()


def completion_values(critic: PreTrainedModel, packed: dict[str, torch.Tensor]) -> torch.Tensor:
    """Value of the state before each completion token (the critic's output one position
    earlier), as verl's ``compute_values``.

    Args:
        critic: A value model whose ``logits`` are ``(B, L, 1)``.
        packed: A batch from ``memgym.trainers.grpo.pack_segments`` (left-padded prompts,
            right-padded completions of width ``completion_len``).

    Returns:
        ``(B, C)`` values, float32 (float64 for a float64 critic); meaningless where
        ``loss_mask`` is 0.
    """
    c = packed["completion_len"]
    out = critic(input_ids=packed["input_ids"], attention_mask=packed["attention_mask"],
                 position_ids=packed["position_ids"])
    values = out.logits[:, -c - 1:-1, 0]
    return values.to(torch.promote_types(values.dtype, torch.float32))  # bf16 → fp32, fp64 kept
