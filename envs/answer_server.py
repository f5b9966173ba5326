"""The frozen LLM answerer as a served reader: micro-batched across callers, cached.

An :class:`AnswerServer` wraps any :class:`~memgym.engine.Engine` (HF, vLLM, OpenAI: only
``generate`` is used) and decodes greedily. Callers on several threads (envs stepped together,
see ``run_episodes(step_threads=...)``) hand it their prompts; they are gathered into one
``engine.generate`` call, in the style of Ray Serve's ``@serve.batch(max_batch_size,
batch_wait_timeout_s)``, and the completion of each read key (the question and the memory texts
shown with it) is kept in an LRU cache, so a repeated read costs no generation.

Env kwargs must stay JSON-serializable (trajectories record them for replay), so an env names a
served reader: ``answerer="served:<name>"`` after :func:`register_reader` ``(name, server)``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

from memgym.engine import ChatMessages, Engine, SamplingParams
from memgym.errors import ConfigError, EngineError

SERVED = "served:"  # prefix of an env's ``answerer`` argument that names a served reader


@dataclass(frozen=True)
class ServerStats:
    """Counters of an :class:`AnswerServer` since it was built.

    Attributes:
        calls: :meth:`AnswerServer.read` calls.
        requests: Keys asked for (one per prompt of a call).
        hits: Keys answered from the cache.
        joined: Keys already queued or being generated for another caller, shared with it.
        engine_calls: ``engine.generate`` calls.
        generated: Prompts sent to the engine (``requests = hits + joined + generated``).
    """

    calls: int = 0
    requests: int = 0
    hits: int = 0
    joined: int = 0
    engine_calls: int = 0
    generated: int = 0


class AnswerServer:
    """Greedy completions of a frozen engine, micro-batched across threads and LRU-cached.

    A :meth:`read` queues the prompts whose key is neither cached nor already pending and blocks
    until they are generated. One waiting caller at a time runs the engine on up to
    ``max_batch`` queued prompts (the others keep queueing meanwhile), as soon as (a)
    ``max_batch`` prompts are queued, (b) every expected caller is waiting (see
    :func:`expected_callers`: no one else can add to the batch), or (c) the oldest queued prompt
    has waited ``batch_wait_timeout_s``. No thread of its own, no busy-waiting.

    Args:
        engine: Any :class:`~memgym.engine.Engine`; called from the callers' threads, one call at
            a time.
        max_new_tokens: Generation budget per completion (greedy decoding).
        max_batch: Most prompts per ``engine.generate`` call (>= 1).
        batch_wait_timeout_s: Longest wait (seconds, >= 0) for a batch to fill.
        cache_size: Most completions kept (least recently used evicted first); 0 caches none.
        name: Name of the server (default ``"served:<engine name>"``).

    Raises:
        ConfigError: A size or budget below its bound.
    """

    def __init__(self, engine: Engine, max_new_tokens: int = 48, max_batch: int = 64,
                 batch_wait_timeout_s: float = 0.01, cache_size: int = 4096,
                 name: str | None = None) -> None:
        if max_new_tokens < 1 or max_batch < 1 or cache_size < 0 or batch_wait_timeout_s < 0:
            raise ConfigError(
                f"need max_new_tokens >= 1, max_batch >= 1, cache_size >= 0 and "
                f"batch_wait_timeout_s >= 0; got {max_new_tokens}, {max_batch}, {cache_size}, "
                f"{batch_wait_timeout_s}")
        self.engine, self.max_batch, self.cache_size = engine, max_batch, cache_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        self.name = name or f"served:{getattr(engine, 'name', type(engine).__name__)}"
        self._cond = threading.Condition()
        self._cache: OrderedDict[Hashable, str] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}  # queued or being generated
        self._queue: deque[tuple[float, Hashable, ChatMessages, Future]] = deque()
        self._busy = False  # a caller is running the engine
        self._waiting = 0  # callers blocked in read()
        self._expected = 0  # callers announced by expected_callers()
        self._stats = ServerStats()

    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        with self._cond:
            return self._stats

    def cache_len(self) -> int:
        """Completions in the cache now (<= ``cache_size``)."""
        with self._cond:
            return len(self._cache)

    def expect(self, delta: int) -> None:
        """Add ``delta`` (may be negative) to the number of callers expected to read; while all
        of them wait in :meth:`read`, the queue is flushed at once. Prefer
        :func:`expected_callers`, which keeps the count balanced."""
        with self._cond:
            self._expected += delta
            self._cond.notify_all()

    def _count(self, **delta: int) -> None:
        self._stats = ServerStats(**{k: v + delta.get(k, 0)
                                     for k, v in self._stats.__dict__.items()})

    def read(self, keys: Sequence[Hashable], prompts: Sequence[ChatMessages]) -> list[str]:
        """The greedy completion text of each prompt, from the cache where its key is there.

        Args:
            keys: One hashable key per prompt that determines its completion (for the answer
                agent: ``(question, tuple of the memory texts shown, in order)``).
            prompts: Chat prompts, same length as ``keys``.

        Returns:
            One completion text per prompt, in order.

        Raises:
            ConfigError: ``keys`` and ``prompts`` differ in length.
            EngineError: The engine failed on a batch holding one of the prompts (every caller
                waiting on that batch gets the engine's exception).
        """
        if len(keys) != len(prompts):
            raise ConfigError(f"{len(keys)} keys for {len(prompts)} prompts")
        with self._cond:
            futures, hits, joined = [], 0, 0
            for key, prompt in zip(keys, prompts, strict=True):
                if key in self._cache:
                    self._cache.move_to_end(key)
                    future: Future = Future()
                    future.set_result(self._cache[key])
                    hits += 1
                elif key in self._pending:
                    future = self._pending[key]
                    joined += 1
                else:
                    future = self._pending[key] = Future()
                    self._queue.append((time.monotonic(), key, prompt, future))
                futures.append(future)
            self._count(calls=1, requests=len(keys), hits=hits, joined=joined)
            self._cond.notify_all()  # a waiting caller may now see a full batch
            self._waiting += 1
            try:
                while not all(f.done() for f in futures):
                    wait = self._flush_in()
                    if wait is None or wait > 0:
                        self._cond.wait(wait)
                    else:
                        self._flush()
            finally:
                self._waiting -= 1
        return [f.result() for f in futures]

    def _flush_in(self) -> float | None:
        """Seconds until the queue is due to flush (0: now; None: nothing to flush now)."""
        if self._busy or not self._queue:
            return None
        if len(self._queue) >= self.max_batch or 0 < self._expected <= self._waiting:
            return 0.0
        return max(0.0, self._queue[0][0] + self.batch_wait_timeout_s - time.monotonic())

    def _flush(self) -> None:
        """Generate the first ``max_batch`` queued prompts; called and returns holding the lock,
        which it releases while the engine runs."""
        batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        self._busy = True
        self._count(engine_calls=1, generated=len(batch))
        outcome: list | EngineError | None = None
        self._cond.release()
        try:
            outcome = self.engine.generate([p for _, _, p, _ in batch], self.params)
            if len(outcome) != len(batch):
                raise EngineError(f"{self.name}: the engine returned {len(outcome)} "
                                  f"completions for {len(batch)} prompts")
        except EngineError as exc:
            outcome = exc
        finally:  # outcome None: the engine raised something else, which goes on up here
            self._cond.acquire()
            if outcome is None:
                outcome = EngineError(f"{self.name}: the engine raised an unexpected error "
                                      f"in another caller's thread (see its traceback)")
            for i, (_, key, _, future) in enumerate(batch):
                del self._pending[key]
                if isinstance(outcome, EngineError):
                    future.set_exception(outcome)
                    continue
                text = outcome[i].text
                future.set_result(text)
                if self.cache_size:
                    self._cache[key] = text
                    self._cache.move_to_end(key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            self._busy = False
            self._cond.notify_all()


_READERS: dict[str, tuple[AnswerServer, str]] = {}  # name -> (server, metric)
_READERS_LOCK = threading.Lock()


def register_reader(name: str, server: AnswerServer, metric: str = "f1",
                    replace: bool = False) -> None:
    """Make ``server`` the served reader that env kwargs name as ``answerer="served:<name>"``
    in this process (an env resolves the name when it is built).

    Args:
        name: Non-empty name.
        server: The reader.
        metric: Score of its answers: ``"f1"`` (token F1) or ``"em"`` (exact match).
        replace: Replace a reader already registered under ``name``.

    Raises:
        ConfigError: Empty name, unknown metric, or ``name`` taken and not ``replace``.
    """
    if not name or metric not in ("f1", "em"):
        raise ConfigError(f"need a non-empty name and metric 'f1' or 'em', got {name!r}, "
                          f"{metric!r}")
    with _READERS_LOCK:
        if name in _READERS and not replace:
            raise ConfigError(f"a served reader named {name!r} is already registered")
        _READERS[name] = (server, metric)


def unregister_reader(name: str) -> None:
    """Forget the reader registered as ``name`` (nothing if none)."""
    with _READERS_LOCK:
        _READERS.pop(name, None)


def lookup_reader(name: str) -> tuple[AnswerServer, str]:
    """``(server, metric)`` registered as ``name``.

    Raises:
        ConfigError: No reader has that name (the message lists the registered names).
    """
    with _READERS_LOCK:
        if name not in _READERS:
            raise ConfigError(f"no served reader named {name!r}; registered: "
                              f"{sorted(_READERS)} (memgym.envs.answer_server.register_reader)")
        return _READERS[name]


class _Callers:
    """Handle of :func:`expected_callers`: call :meth:`done` when a task has finished."""

    def __init__(self, servers: list[AnswerServer], tasks: int, concurrency: int) -> None:
        self.servers, self.left, self.concurrency = servers, 0, concurrency
        self._lock = threading.Lock()
        self._add(tasks)

    def _add(self, tasks: int | None) -> None:
        """``tasks`` more (negative: fewer; None: no more) tasks left; re-announce to every
        server the ones running: ``min(left, concurrency)``."""
        with self._lock:
            before = min(self.left, self.concurrency)
            self.left = 0 if tasks is None else self.left + tasks
            for server in self.servers:
                server.expect(min(self.left, self.concurrency) - before)

    def done(self) -> None:
        """One task has finished: it will read no more."""
        self._add(-1)


@contextmanager
def expected_callers(tasks: int, concurrency: int) -> Iterator[_Callers]:
    """Announce to every registered reader that ``tasks`` tasks, run ``concurrency`` at a time
    by a FIFO thread pool, may read from it, so a batch is flushed as soon as every running task
    waits on it rather than after the batch timeout. Each task calls ``done()`` on the handle
    when it has finished (whether or not it read); leaving the block withdraws what is left.

    Args:
        tasks: Number of tasks (>= 0).
        concurrency: Threads running them (>= 1).

    Yields:
        The handle.
    """
    with _READERS_LOCK:
        servers = list(dict.fromkeys(server for server, _ in _READERS.values()))
    callers = _Callers(servers, tasks, max(1, concurrency))
    try:
        yield callers
    finally:
        callers._add(None)
