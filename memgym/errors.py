"""The one exception hierarchy of memgym.

Every error memgym raises on bad input derives from :class:`MemgymError`, so a caller can catch
memgym's errors without catching bugs. A malformed *LLM action* is never an exception: it is a
:class:`memgym.codecs.ParseError` value recorded in ``info`` and penalized.
"""

from __future__ import annotations

import gymnasium.error


class MemgymError(Exception):
    """Base class of every error memgym raises on purpose."""


class ConfigError(MemgymError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class DataNotFoundError(MemgymError, FileNotFoundError):
    """A dataset file is not in any data directory memgym searched.

    Attributes:
        relative: The file's path inside a data directory (``None`` if not given).
        dataset: The registered data set (:data:`memgym.data.DATASETS`) holding it, whose
            ``memgym data fetch NAME`` gets it; ``None`` for a file memgym cannot fetch.
    """

    def __init__(self, message: str, relative: str | None = None,
                 dataset: str | None = None) -> None:
        super().__init__(message)
        self.relative, self.dataset = relative, dataset

    def __reduce__(self):  # keeps the attributes across pickling (Ray, multiprocessing)
        return type(self), (self.args[0], self.relative, self.dataset)


class DataFormatError(MemgymError, ValueError):
    """A dataset file exists but does not have the expected structure."""


class ChecksumError(DataFormatError):
    """A data file's (or a download's) sha256 differs from its pin."""


class DataFetchError(MemgymError, OSError):
    """A data set could not be downloaded (network, HTTP status, or an unknown data set)."""


class SchemaError(MemgymError, ValueError):
    """A trajectory file has a schema version or columns this memgym cannot read."""


class EngineError(MemgymError, RuntimeError):
    """An inference engine could not load its model or generate."""


class PolicyError(MemgymError, ValueError):
    """A policy name or specification is unknown or inconsistent."""


class ReplayError(MemgymError, RuntimeError):
    """A saved trajectory does not replay as recorded where it must (e.g. a fork's prefix)."""


class RolloutError(MemgymError, RuntimeError):
    """A distributed rollout cannot finish (an actor failed more often than allowed)."""


class StepError(MemgymError):
    """An env's ``step`` was called wrongly: a programming error of the caller, not a bad action
    text (a malformed action text is data: a parse error in ``info``, penalized)."""


class ResetNeeded(StepError, gymnasium.error.ResetNeeded):
    """An env was stepped before its first ``reset()`` or after its episode ended (terminated
    or truncated). Also a :class:`gymnasium.error.ResetNeeded`, which Gymnasium's
    ``OrderEnforcing`` wrapper raises before a first reset."""


class ActionTypeError(StepError, TypeError):
    """An env's ``step`` got an action that is not a ``str``."""
