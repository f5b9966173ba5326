"""The inference-engine protocol: chat prompts in, completions with token ids and logprobs out.

Implementations live in ``memgym.rollouts`` (HF transformers, scripted); environments that need
a frozen LLM (e.g. an answer agent) take any object satisfying :class:`Engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from memgym.codecs.base import CutAction

ChatMessages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample.

    Attributes:
        max_new_tokens: Most tokens to generate per completion.
        temperature: Softmax temperature; 0 means greedy decoding.
        top_p: Nucleus-sampling mass in (0, 1].
        seed: Seed of the sampler, for reproducible sampling; None leaves the RNG as is.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    """One generated completion.

    Attributes:
        text: Decoded completion without special tokens.
        prompt_ids: Token ids (int) of the templated prompt, no padding.
        completion_ids: Generated token ids (int), up to and including EOS if produced.
        logprobs: Logprob (float, nats) of each completion token under the sampling
            distribution, same length as ``completion_ids``.
        offsets: Character offset in ``text`` where each completion token ends (int, same
            length as ``completion_ids``), so env-side character spans of the action map to
            the engine's tokens (memory-token credit); empty when not known.
        finish_reason: ``"stop"`` (end of turn) or ``"length"`` (cut at ``max_new_tokens``),
            as OpenAI's and vLLM's outputs name it.
    """

    text: str
    prompt_ids: tuple[int, ...] = field(default=())
    completion_ids: tuple[int, ...] = field(default=())
    logprobs: tuple[float, ...] = field(default=())
    offsets: tuple[int, ...] = field(default=())
    finish_reason: str = "stop"

    @property
    def action(self) -> str:
        """The text to pass to ``env.step``: ``text``, as a
        :class:`~memgym.codecs.base.CutAction` when the completion was cut at
        ``max_new_tokens`` (strict envs score that as a format error)."""
        return CutAction(self.text) if self.finish_reason == "length" else self.text


class Engine(Protocol):
    """Anything that turns a batch of chat prompts into completions."""

    name: str

    def generate(self, prompts: Sequence[ChatMessages], params: SamplingParams) -> list[Completion]:
        """Generate one completion per prompt, in order."""
        ...
