"""The base class of every config section: unknown keys are errors, not silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section (pydantic): a key it does not declare is refused
    (:func:`memgym.config.load_config` names the nearest valid one)."""

    model_config = ConfigDict(extra="forbid")
