"""Engine over an OpenAI-compatible ``/v1/completions`` endpoint (``vllm serve`` or any server).

Prompts are chat-templated and tokenized here, sent as token ids (so the prompt ids recorded in a
trajectory are exactly what the server saw), one request per prompt. The ``openai`` client does
the retries (exponential backoff on connection errors, timeouts, 408/409/429/5xx) and the
timeouts; an ``asyncio.Semaphore`` caps the requests in flight.

The server must return the sampled tokens as ids: vLLM does with ``return_tokens_as_token_ids``
(sent in the request body), giving tokens as ``"token_id:<int>"``. Start vLLM with
``--logprobs-mode processed_logprobs`` so the logprobs are those of the sampling distribution
(after temperature), as :class:`memgym.engine.Completion` requires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import openai
from transformers import PreTrainedTokenizerBase

from memgym.engine import ChatMessages, Completion, SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.chat import ChatRenderer

_TOKEN_ID = "token_id:"


class OpenAIEngine:
    """Completions from an OpenAI-compatible server, with token ids and logprobs.

    Args:
        base_url: Server root including ``/v1``, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: Model name the server serves (``vllm serve``'s model path or
            ``--served-model-name``; a LoRA adapter's name selects that adapter).
        tokenizer: The served model's tokenizer (chat template and decoding).
        api_key: Bearer token; local servers accept any.
        max_concurrency: Most requests in flight at once per :meth:`generate` call.
        timeout: Seconds one request may take before it counts as failed.
        max_retries: Retries per request after the first try (the ``openai`` client's policy).
        name: Name recorded in trajectories.
    """

    def __init__(self, base_url: str, model: str, tokenizer: PreTrainedTokenizerBase, *,
                 api_key: str = "EMPTY", max_concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 3, name: str | None = None) -> None:
        if max_concurrency < 1:
            raise EngineError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url, self.model, self.tokenizer = base_url, model, tokenizer
        self.api_key, self.max_concurrency = api_key, max_concurrency
        self.timeout, self.max_retries = timeout, max_retries
        self.name = name or f"openai:{model}"
        self.renderer = ChatRenderer(tokenizer)

    def prompt_ids(self, prompt: ChatMessages) -> list[int]:
        """Token ids of the chat-templated prompt with the assistant header (see
        :meth:`memgym.rollouts.chat.ChatRenderer.prompt`)."""
        return list(self.renderer.prompt(prompt).ids)

    def generate(self, prompts: Sequence[ChatMessages], params: SamplingParams) -> list[Completion]:
        """See :class:`memgym.engine.Engine`. Blocks; from async code await :meth:`agenerate`.

        Raises:
            EngineError: A request still failed after its retries, timed out, or the server
                returned no token ids.
        """
        return asyncio.run(self.agenerate(prompts, params))

    async def agenerate(self, prompts: Sequence[ChatMessages],
                        params: SamplingParams) -> list[Completion]:
        """Async :meth:`generate`: all prompts concurrently, at most ``max_concurrency`` in
        flight. Prompt ``i`` is sampled with seed ``params.seed + i`` (when a seed is set), so
        repeated prompts of a GRPO group still differ."""
        limit = asyncio.Semaphore(self.max_concurrency)
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                      timeout=self.timeout, max_retries=self.max_retries) as client:
            async def one(i: int, prompt: ChatMessages) -> Completion:
                rendered = self.renderer.prompt(prompt)
                seed = None if params.seed is None else params.seed + i
                async with limit:
                    completion = await self._complete(client, list(rendered.ids), params, seed)
                return self.renderer.finish([prompt], [rendered], [completion])[0]

            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    async def _complete(self, client: openai.AsyncOpenAI, ids: list[int], params: SamplingParams,
                        seed: int | None) -> Completion:
        try:
            response = await client.completions.create(
                model=self.model, prompt=ids, max_tokens=params.max_new_tokens,
                temperature=params.temperature, top_p=params.top_p, seed=seed, logprobs=0,
                extra_body={"return_tokens_as_token_ids": True})
        except openai.APIError as exc:
            raise EngineError(f"completion request to {self.base_url} failed: {exc}") from exc
        choice = response.choices[0]
        if choice.logprobs is None or choice.logprobs.tokens is None:
            raise EngineError(f"{self.base_url} returned no logprobs; expected a server that "
                              "supports `logprobs` on /v1/completions")
        completion_ids = tuple(_token_id(t) for t in choice.logprobs.tokens)
        logprobs = tuple(float(x) for x in choice.logprobs.token_logprobs or ())
        if len(logprobs) != len(completion_ids):
            raise EngineError(f"{len(completion_ids)} tokens but {len(logprobs)} logprobs")
        return Completion(self.tokenizer.decode(completion_ids, skip_special_tokens=True),
                          tuple(ids), completion_ids, logprobs,
                          finish_reason="length" if choice.finish_reason == "length" else "stop")


def _token_id(token: str) -> int:
    """``"token_id:123"`` → 123 (vLLM's ``return_tokens_as_token_ids`` format)."""
    if not token.startswith(_TOKEN_ID) or not token[len(_TOKEN_ID):].isdigit():
        raise EngineError(f"expected tokens as 'token_id:<int>' (vLLM's "
                          f"return_tokens_as_token_ids), got {token!r}")
    return int(token[len(_TOKEN_ID):])
