"""The policy protocol and the LLM policy over any engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from memgym.engine import Completion, Engine, SamplingParams


class Policy(Protocol):
    """Maps a batch of observations (and their env infos) to one completion each."""

    name: str

    def act(self, observations: Sequence[str], infos: Sequence[dict]) -> list[Completion]:
        """One completion per observation, in order."""
        ...


class LLMPolicy:
    """An LLM acting through an :class:`Engine`: each observation is one user message.

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
        prompts = [[{"role": "user", "content": obs}] for obs in observations]
        return self.engine.generate(prompts, params)
