"""The served reader of a run (the ``reader:`` section, :class:`memgym.config.run.ReaderConfig`):
a frozen LLM answer agent, loaded apart from the policy, wrapped in an
:class:`~memgym.envs.answer_server.AnswerServer` and registered under its name for as long as the
run lasts, so that envs built with ``answerer="served:<name>"`` score their questions with it.

Used by ``memgym train`` and ``memgym eval --reader``; like :mod:`memgym.train`, part of the
application layer (it builds engines from :mod:`memgym.rollouts`).
"""

from __future__ import annotations

from dataclasses import asdict

from memgym.config import ReaderConfig, RolloutConfig, TrainConfig
from memgym.config.run import served_names
from memgym.engine import Engine
from memgym.envs.answer_server import (
    AnswerServer,
    ServerStats,
    lookup_reader,
    register_reader,
    unregister_reader,
)
from memgym.errors import ConfigError
from memgym.rollouts.engines import make_engine


def reader_engine(config: ReaderConfig) -> Engine:
    """The reader's engine: ``config.model`` served by ``config.engine``, a copy of its own
    (never the policy's), batching up to ``config.max_batch`` prompts.

    Raises:
        ConfigError: ``engine_kwargs`` the engine does not take.
        EngineError: The model cannot be found or loaded.
    """
    rollout = RolloutConfig(engine=config.engine, engine_kwargs=config.engine_kwargs,
                            base_url=config.base_url)
    try:
        return make_engine(rollout, config.model, config.max_batch)
    except ConfigError as exc:
        raise ConfigError(f"reader: {exc}") from exc


class ServedReader:
    """The reader ``config`` describes, registered as ``config.name`` (replacing a reader of
    that name, which :meth:`close` registers again) until :meth:`close` or the end of a
    ``with`` block.

    Args:
        config: The ``reader:`` section.
        engine: An engine to serve instead of building :func:`reader_engine` ``(config)``.

    Attributes:
        server: The :class:`~memgym.envs.answer_server.AnswerServer`.

    Raises:
        ConfigError: See :func:`reader_engine`.
        EngineError: See :func:`reader_engine`.
    """

    def __init__(self, config: ReaderConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.server = AnswerServer(engine or reader_engine(config), config.max_new_tokens,
                                   config.max_batch, config.batch_wait_timeout_s,
                                   config.cache_size, name=f"served:{config.name}")
        try:
            self._replaced: tuple[AnswerServer, str] | None = lookup_reader(config.name)
        except ConfigError:
            self._replaced = None
        register_reader(config.name, self.server, config.metric, replace=True)
        self._seen = ServerStats()
        self._open = True

    def stats(self) -> ServerStats:
        """The server's counters since it was built."""
        return self.server.stats()

    def metrics(self) -> dict[str, int]:
        """The counters since the previous call (or since it was built) as ``reader_<counter>``
        metrics (:class:`~memgym.envs.answer_server.ServerStats`: calls, requests, hits,
        joined, engine_calls, generated)."""
        now = self.stats()
        delta = {f"reader_{k}": v - getattr(self._seen, k) for k, v in asdict(now).items()}
        self._seen = now
        return delta

    def describe(self) -> str:
        """One line: the server's counters since it was built."""
        s = self.stats()
        return (f"reader {self.config.name!r} ({self.config.model.name_or_path}): {s.requests} "
                f"questions, {s.hits} cache hits, {s.joined} shared, {s.generated} generated in "
                f"{s.engine_calls} engine calls")

    def close(self) -> None:
        """Unregister the reader (registering the one it replaced again); idempotent."""
        if not self._open:
            return
        self._open = False
        unregister_reader(self.config.name)
        if self._replaced is not None:
            register_reader(self.config.name, *self._replaced)

    def __enter__(self) -> ServedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_readers(config: TrainConfig) -> None:
    """Fail fast, before any model is loaded, when ``env`` / ``eval_env`` name a served reader
    that is not registered in this process and is not the run's own ``reader`` (which the run
    registers).

    Raises:
        ConfigError: A named reader is not registered (add a ``reader:`` section, or register
            it with :func:`~memgym.envs.answer_server.register_reader` before training).
    """
    named = served_names(config.env) | served_names({**config.env, **config.eval_env})
    for name in sorted(named - ({config.reader.name} if config.reader else set())):
        try:
            lookup_reader(name)
        except ConfigError as exc:
            raise ConfigError(f"answerer 'served:{name}' needs a reader: add a `reader:` "
                              f"section named {name!r} to the config ({exc})") from exc
