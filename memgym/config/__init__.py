"""Run configuration: YAML files and dotted overrides (OmegaConf) validated by pydantic.

``load_config("run.yaml", ["grpo.learning_rate=1e-6", "rollout.engine=vllm"])`` merges each
override into its nested section (as Hydra / verl users expect) and validates the result with
:class:`TrainConfig`; an unknown key is refused with the nearest valid name. Nothing here imports
torch, Ray or the trainers.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from memgym.config.base import Section
from memgym.config.rollout import RolloutConfig
from memgym.config.run import (
    DistributedConfig,
    LoraConfig,
    ModelConfig,
    ReaderConfig,
    SamplingConfig,
    TrainConfig,
    WarmStartConfig,
)
from memgym.config.trainer import GRPOConfig, PPOConfig, TrainerConfig
from memgym.errors import ConfigError

__all__ = ["DistributedConfig", "GRPOConfig", "LoraConfig", "ModelConfig", "PPOConfig",
           "ReaderConfig", "RolloutConfig", "SamplingConfig", "Section", "TrainConfig",
           "TrainerConfig", "WarmStartConfig", "load_config", "parse_overrides"]

SHORTHANDS = {"model": "model.name_or_path"}  # a scalar given for a section sets this key


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings (KEY dotted, VALUE YAML) → ``{KEY: value}``.

    Raises:
        ConfigError: A pair has no ``=`` or an empty key.
    """
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE (KEY may be dotted: grpo.learning_rate=1e-6), "
                              f"got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{pair!r}: the value is not valid YAML ({exc})") from exc
    return out


def _section(cls: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The section class that ``loc`` (a pydantic error location) lies in, or None."""
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        args = typing.get_args(field.annotation) if isinstance(
            field.annotation, types.UnionType) else (field.annotation,)
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return None
        cls = models[0]
    return cls


def _describe(error: ValidationError) -> str:
    """One line per error; an unknown key gets the nearest valid key of its section."""
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        where = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = _section(TrainConfig, item["loc"][:-1])
            names = list(section.model_fields) if section else []
            near = difflib.get_close_matches(loc[-1], names, n=1)
            hint = (f"did you mean {'.'.join([*loc[:-1], near[0]])}?" if near
                    else f"valid keys: {', '.join(names)}")
            lines.append(f"unknown key {where}: {hint}")
        else:
            lines.append(f"{where}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def load_config(path: str | Path | None = None,
                overrides: Sequence[str] | Mapping[str, object] | None = None) -> TrainConfig:
    """Read a YAML config (or start from the defaults), merge dotted overrides and validate.

    Args:
        path: YAML file, or None for the defaults.
        overrides: ``["grpo.learning_rate=1e-6", ...]`` (values parsed as YAML) or
            ``{"grpo.learning_rate": 1e-6, ...}``. Each is merged into its nested section
            (``OmegaConf.update(merge=True)``): the section's other keys stay. ``model=NAME``
            sets ``model.name_or_path``.

    Returns:
        The validated config.

    Raises:
        ConfigError: The file is missing or not YAML, an override is malformed, or the merged
            config fails validation (an unknown key is named with the nearest valid one).
    """
    where = "config" if path is None else str(path)
    data: object = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at top level, got {type(data).__name__}")
    for key, full in SHORTHANDS.items():
        if isinstance(data.get(key), str):
            data[key] = {full.split(".", 1)[1]: data[key]}
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    try:
        merged = OmegaConf.create(data)
        for key, value in (overrides or {}).items():
            if not isinstance(value, dict | list):
                key = SHORTHANDS.get(key, key)
            OmegaConf.update(merged, key, value, merge=True)
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from exc
