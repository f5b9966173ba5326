"""Engines from config: ``rollout.engine`` (``hf`` | ``vllm`` | ``openai``) and ``model:``.

Used by ``memgym train``, ``memgym rollout`` / ``eval`` and the Ray engine actors, so that one
config picks the same engine everywhere. vLLM and the OpenAI client are imported only when
asked for.
"""

from __future__ import annotations

from memgym.config import ModelConfig, RolloutConfig
from memgym.engine import Engine, SamplingParams
from memgym.errors import ConfigError
from memgym.rollouts.policy import LLMPolicy


def make_engine(rollout: RolloutConfig, model: ModelConfig, batch_size: int = 16, *,
                hf_model=None, tokenizer=None, enable_lora: bool = False) -> Engine:
    """The engine ``rollout.engine`` names, serving ``model``.

    Args:
        rollout: Its ``engine``, ``engine_kwargs`` (extra constructor arguments) and, for
            ``openai``, ``base_url``.
        model: The served model: ``name_or_path`` and ``dtype`` (``hf`` also takes the device
            and the other settings of :class:`memgym.config.ModelConfig`).
        batch_size: Most prompts per ``hf`` generation call.
        hf_model: An already loaded transformers model for ``hf`` (e.g. the trainer's own, so
            no weight sync is needed); None loads ``model``.
        tokenizer: Its tokenizer (with ``hf_model``).
        enable_lora: Let a ``vllm`` engine serve LoRA adapters (a LoRA run syncs adapters).

    Returns:
        An :class:`memgym.engine.Engine`.

    Raises:
        ConfigError: ``hf_model`` without ``tokenizer``, or ``engine_kwargs`` the engine does
            not take.
        EngineError: The model cannot be found or loaded.
    """
    kwargs = dict(rollout.engine_kwargs)
    try:
        if rollout.engine == "hf":
            from memgym.rollouts.hf import HFEngine

            if hf_model is None:
                return HFEngine.from_pretrained(model, batch_size, **kwargs)
            if tokenizer is None:
                raise ConfigError("make_engine: hf_model needs its tokenizer")
            kwargs.setdefault("fast_path", model.fast_path)
            return HFEngine(hf_model, tokenizer, batch_size, **kwargs)
        if rollout.engine == "vllm":
            from memgym.rollouts.vllm import VLLMEngine

            kwargs.setdefault("enable_lora", enable_lora)
            kwargs.setdefault("dtype", model.dtype)  # engine_kwargs.dtype serves in another one
            return VLLMEngine(model.name_or_path, **kwargs)
        from memgym.rollouts.hf import load_tokenizer
        from memgym.rollouts.openai_engine import OpenAIEngine

        return OpenAIEngine(rollout.base_url, model.name_or_path,
                            load_tokenizer(model.name_or_path), **kwargs)
    except TypeError as exc:  # an engine_kwargs key the constructor does not take
        raise ConfigError(f"rollout.engine_kwargs {sorted(rollout.engine_kwargs)} do not fit "
                          f"the {rollout.engine} engine: {exc}") from exc


def engine_policy(rollout: RolloutConfig, model: ModelConfig, params: SamplingParams,
                  name: str = "policy", batch_size: int = 16) -> LLMPolicy:
    """An :class:`~memgym.rollouts.LLMPolicy` over :func:`make_engine`; pass
    ``functools.partial(engine_policy, ...)`` as a Ray runner's policy factory so the engine
    is built inside its actor (on the actor's GPU)."""
    return LLMPolicy(make_engine(rollout, model, batch_size), params, name=name)
