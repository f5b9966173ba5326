"""The served reader (envs/answer_server.py) with the real SmolLM2: batching, cache, errors."""

from __future__ import annotations

import threading
import time

import pytest

from memgym.engine import SamplingParams
from memgym.envs.answer_server import (
    AnswerServer,
    expected_callers,
    register_reader,
    unregister_reader,
)
from memgym.envs.answerers import LLMAnswerer, Question, make_answerer
from memgym.envs.memory_manager.baselines import Mem0LikePolicy
from memgym.errors import ConfigError, EngineError
from memgym.memory import MemoryBank
from memgym.ops import Add
from memgym.rollouts import run_episodes

from .conftest import episode_view

pytestmark = pytest.mark.slow
ENV = "memgym/LoCoMoMemoryManager-v1"
FACTS = ["Caroline's dog is named Max.", "Melanie painted a sunrise in 2022.",
         "Caroline moved from Sweden four years ago."]
QUESTIONS = [Question("What is the name of Caroline's dog?", ("Max",)),
             Question("Where did Caroline move from?", ("Sweden",))]


class Counting:
    """Wraps an engine: records the batch size of every ``generate`` call; ``fail`` (an
    exception) is raised instead of generating."""

    name = "counting"

    def __init__(self, engine) -> None:
        self.engine, self.batches, self.fail = engine, [], None

    def generate(self, prompts, params):
        self.batches.append(len(prompts))
        if self.fail is not None:
            raise self.fail
        return self.engine.generate(prompts, params)


def bank_of(facts) -> MemoryBank:
    bank = MemoryBank()
    for fact in facts:
        bank.apply(Add(fact), 0)
    return bank


def key(i: int) -> tuple[str, tuple[str, ...]]:
    return (f"Question {i}?", (FACTS[i % len(FACTS)],))


def prompt(i: int):
    return LLMAnswerer.prompt(*key(i))


def in_threads(target, n: int, timeout: float = 120.0) -> None:
    """Run ``target(i)`` for i < n on n threads as ``expected_callers(n, n)`` tasks; fails if
    one is still running after ``timeout`` seconds (a hang)."""
    with expected_callers(n, n) as callers:
        def task(i):
            try:
                target(i)
            finally:
                callers.done()

        threads = [threading.Thread(target=task, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in threads)


@pytest.fixture
def serve(engine):
    """``serve(**server_kwargs) -> (counting engine, server)``: a server with greedy 8-token
    answers over a :class:`Counting` SmolLM2, registered as ``test`` for the test."""
    def make(**kwargs):
        counting = Counting(engine)
        server = AnswerServer(counting, **{"max_new_tokens": 8, **kwargs})
        register_reader("test", server)
        return counting, server

    yield make
    unregister_reader("test")


def test_served_answers_equal_the_engines_in_one_batch(engine, serve):
    counting, _ = serve(batch_wait_timeout_s=0.0)
    bank = bank_of(FACTS)
    direct = LLMAnswerer(engine, top_k=5, max_new_tokens=8).answer(QUESTIONS, bank)
    through = make_answerer("served:test", top_k=5).answer(QUESTIONS, bank)
    assert [(a.prediction, a.score, a.retrieved) for a in through] == \
        [(a.prediction, a.score, a.retrieved) for a in direct]
    assert counting.batches == [2]  # both questions of the call in one batch
    assert any(a.prediction for a in through)


def test_requests_from_threads_share_one_engine_call(engine, serve):
    counting, server = serve(batch_wait_timeout_s=60.0)
    prompts = [prompt(i) for i in range(3)]
    expected = [c.text for c in engine.generate(prompts, SamplingParams(8, temperature=0.0))]
    out: dict[int, list[str]] = {}
    tick = time.perf_counter()
    in_threads(lambda i: out.__setitem__(i, server.read([key(i)], [prompts[i]])), 3)
    # flushed when all three callers waited, not after the 60 s batch timeout
    assert time.perf_counter() - tick < 50
    assert [out[i] for i in range(3)] == [[t] for t in expected]
    stats = server.stats()
    assert (stats.calls, stats.requests, stats.engine_calls, stats.generated) == (3, 3, 1, 3)
    assert counting.batches == [3]


def test_timeout_and_max_batch_flush_without_expected_callers(engine):
    counting = Counting(engine)
    server = AnswerServer(counting, max_new_tokens=4, max_batch=2, batch_wait_timeout_s=0.3)
    tick = time.perf_counter()
    server.read([key(0)], [prompt(0)])  # alone: waits out the timeout, then flushes
    assert time.perf_counter() - tick >= 0.3
    server.read([key(1), key(2), key(3)], [prompt(i) for i in (1, 2, 3)])
    assert counting.batches == [1, 2, 1]  # max_batch splits the second call


def test_repeated_read_is_a_cache_hit(serve):
    counting, server = serve(batch_wait_timeout_s=0.0)
    bank = bank_of(FACTS)
    answerer = make_answerer("served:test", top_k=5)
    first = answerer.answer(QUESTIONS, bank)
    again = answerer.answer(QUESTIONS, bank)
    assert again == first and counting.batches == [2]
    stats = server.stats()
    assert (stats.requests, stats.hits, stats.generated) == (4, 2, 2)
    answerer.answer(QUESTIONS[:1], bank_of(FACTS[:1]))  # other memories: another key
    assert counting.batches == [2, 1] and server.stats().hits == 2
    server.read([key(5), key(5)], [prompt(5)] * 2)  # the same key twice: generated once
    assert counting.batches == [2, 1, 1] and server.stats().joined == 1


def test_lru_bound(engine):
    counting = Counting(engine)
    server = AnswerServer(counting, max_new_tokens=4, cache_size=2, batch_wait_timeout_s=0.0)
    server.read([key(0), key(1), key(2)], [prompt(i) for i in range(3)])
    assert server.cache_len() == 2  # key 0 evicted
    server.read([key(2)], [prompt(2)])  # hit: key 2 becomes the most recent
    server.read([key(0)], [prompt(0)])  # miss: key 1 (least recent) evicted
    assert counting.batches == [3, 1] and server.cache_len() == 2
    server.read([key(2), key(0)], [prompt(2), prompt(0)])
    assert counting.batches == [3, 1]
    server.read([key(1)], [prompt(1)])
    assert counting.batches == [3, 1, 1] and server.stats().hits == 3


def test_engine_error_reaches_every_waiting_caller(serve):
    counting, server = serve(batch_wait_timeout_s=60.0)
    counting.fail = EngineError("out of memory")
    errors: dict[int, BaseException] = {}

    def read(i):
        try:
            server.read([key(i)], [prompt(i)])
        except EngineError as exc:
            errors[i] = exc

    in_threads(read, 3)
    assert sorted(errors) == [0, 1, 2] and counting.batches == [3]
    assert all(e is counting.fail for e in errors.values())
    assert server.cache_len() == 0
    counting.fail = TypeError("a bug in the engine")  # not an EngineError: raised where it
    kinds: dict[int, type] = {}                      # happened, EngineError to the others

    def read_any(i):
        try:
            server.read([key(i)], [prompt(i)])
        except (EngineError, TypeError) as exc:
            kinds[i] = type(exc)

    in_threads(read_any, 2)
    assert sorted(kinds.values(), key=str) == sorted([EngineError, TypeError], key=str)
    counting.fail = None  # failures are not cached: the next read generates
    in_threads(lambda i: server.read([key(0)], [prompt(0)]), 1)
    assert counting.batches == [3, 2, 1] and server.cache_len() == 1


def test_bad_names_and_budgets_are_config_errors(serve):
    _, server = serve()
    with pytest.raises(ConfigError, match=r"'missing'.*\['test'\]"):
        make_answerer("served:missing")
    with pytest.raises(ConfigError, match="already registered"):
        register_reader("test", server)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        LLMAnswerer(server, max_new_tokens=16)
    with pytest.raises(ConfigError):
        AnswerServer(server.engine, max_batch=0)
    with pytest.raises(ConfigError, match="answerer must be"):
        make_answerer("served")


def test_threaded_stepping_gives_the_same_trajectories():
    kwargs = {"window": 3, "split": "val"}
    seeds = [0, 1, 2, 3, 4]
    one = run_episodes(ENV, kwargs, Mem0LikePolicy(), seeds, num_envs=3, progress=False)
    three = run_episodes(ENV, kwargs, Mem0LikePolicy(), seeds, num_envs=3, progress=False,
                         step_threads=3)
    assert [episode_view(t) for t in three] == [episode_view(t) for t in one]
    assert all(t.steps[-1].terminated for t in three)
    with pytest.raises(ConfigError):
        run_episodes(ENV, kwargs, Mem0LikePolicy(), seeds, step_threads=0)


def test_envs_ending_together_share_one_engine_call(engine):
    kwargs = {"window": 3, "split": "val", "answerer": "served:rollout"}
    seeds = [10, 11, 12]
    runs = {}
    for threads in (1, 3):
        counting = Counting(engine)
        # sequential: flushed when the timeout passes; threaded: when all three steps wait
        server = AnswerServer(counting, max_new_tokens=8,
                              batch_wait_timeout_s=0.0 if threads == 1 else 60.0)
        register_reader("rollout", server)
        try:
            trajs = run_episodes(ENV, kwargs, Mem0LikePolicy(), seeds, num_envs=3,
                                 progress=False, step_threads=threads)
        finally:
            unregister_reader("rollout")
        runs[threads] = trajs, counting.batches
    (one, calls_one), (three, calls_three) = runs[1], runs[3]
    assert [episode_view(t) for t in three] == [episode_view(t) for t in one]
    assert all(t.steps[-1].info["qa"] for t in three)  # every episode asked its questions
    assert len(calls_three) == 1 < len(seeds)  # the three episodes ended in one engine call
    assert len(calls_one) > 1 and sum(calls_one) == sum(calls_three)  # one call per episode
