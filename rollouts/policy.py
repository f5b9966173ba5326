"""The policy protocol, the LLM policy over any engine, and scripted actions as token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from memgym.engine import Completion, Engine, SamplingParams
from memgym.rollouts.chat import ChatRenderer, chat_prompt


class Policy(Protocol):
    """Maps a batch of observations (and their env infos) to one completion each."""

    name: str

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """One completion per observation, in order."""
        ...


class LLMPolicy:
    """An LLM acting through an :class:`Engine`. Its prompt is the env's chat context
    (``info["chat"]``) where the env gives one, else the observation as one user message
    (:func:`~memgym.rollouts.chat.chat_prompt`).

    Args:
        engine: The engine that generates.
        params: Sampling parameters; when ``params.seed`` is set, call ``k`` of :meth:`act` uses
            seed ``params.seed + k`` so a rollout is reproducible but calls differ.
        name: Name recorded in trajectories.
    """

    def __init__(self, engine: Engine, params: SamplingParams, name: str = "llm") -> None:
        self.engine, self.params, self.name = engine, params, name
        self._calls = 0

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`Policy`."""
        params = self.params
        if params.seed is not None:
            params = replace(params, seed=params.seed + self._calls)
        self._calls += 1
        prompts = [chat_prompt(obs, info) for obs, info in zip(observations, infos, strict=True)]
        return self.engine.generate(prompts, params)


class TokenizedPolicy:
    """A scripted policy whose actions are recorded as token ids under a model's chat template,
    exactly as that model's own completions would be: the prompt as :class:`LLMPolicy` would
    send it (rendered by a :class:`~memgym.rollouts.chat.ChatRenderer`), the action's tokens
    plus EOS as the completion. Its trajectories have token segments, so they are trainable
    samples (an SFT warm start) and their segment boundaries can be checked.

    The logprob of every completion token is 0.0: a scripted policy is deterministic, so the
    behaviour policy gives its action probability 1.

    Args:
        policy: The scripted policy that decides the actions.
        tokenizer: The model's tokenizer (with a chat template).
    """

    def __init__(self, policy: Policy, tokenizer: PreTrainedTokenizerBase) -> None:
        self.policy, self.name = policy, policy.name
        self.renderer = ChatRenderer(tokenizer)

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """See :class:`Policy`."""
        out = []
        for obs, info, action in zip(observations, infos, self.policy.act(observations, infos),
                                     strict=True):
            messages = chat_prompt(obs, info)
            prompt = self.renderer.prompt(messages)
            ids = tuple(self.renderer.completion_ids(action.text))
            out += self.renderer.finish([messages], [prompt], [
                Completion(action.text, prompt.ids, ids, (0.0,) * len(ids))])
        return out
