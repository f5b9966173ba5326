"""OpenAIEngine against a real local OpenAI-compatible HTTP server backed by the HF engine."""

import time

import pytest

from memgym.engine import SamplingParams
from memgym.errors import EngineError
from memgym.rollouts.openai_engine import OpenAIEngine, _token_id

from .openai_server import CompletionServer

pytestmark = pytest.mark.slow
PROMPTS = [[{"role": "user", "content": "Name a fruit."}],
           [{"role": "user", "content": "Say hello in French, then stop."}]]
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)
SHORT = SamplingParams(max_new_tokens=1, temperature=0.0)


def client(server, engine, **kwargs):
    return OpenAIEngine(server.base_url, "smollm2", engine.tokenizer, **kwargs)


def test_greedy_completions_match_the_hf_engine(engine):
    with CompletionServer(engine) as server:
        remote = client(server, engine).generate(PROMPTS, GREEDY)
    local = engine.generate(PROMPTS, GREEDY)
    for r, loc in zip(remote, local, strict=True):
        assert (r.text, r.prompt_ids, r.completion_ids) == (loc.text, loc.prompt_ids,
                                                            loc.completion_ids)
        assert len(r.logprobs) == len(r.completion_ids) > 0
        assert r.logprobs == pytest.approx(loc.logprobs, abs=1e-3)


def test_seeded_sampling_is_reproducible_and_differs_per_prompt(engine):
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=7)
    same = [PROMPTS[0]] * 3
    with CompletionServer(engine) as server:
        a = client(server, engine).generate(same, params)
        b = client(server, engine).generate(same, params)
    assert a == b
    assert len({c.completion_ids for c in a}) > 1  # seed + i: a group's samples differ


def test_retries_a_503_then_succeeds(engine):
    with CompletionServer(engine, fail_first=2) as server:
        (out,) = client(server, engine, max_concurrency=1, max_retries=3).generate(
            PROMPTS[:1], SHORT)
        assert server.requests == 3 and out.completion_ids
    with CompletionServer(engine, fail_first=1) as server, pytest.raises(EngineError, match="503"):
        client(server, engine, max_retries=0).generate(PROMPTS[:1], SHORT)


def test_a_slow_server_times_out(engine):
    with CompletionServer(engine, delay=3.0) as server:
        tick = time.perf_counter()
        with pytest.raises(EngineError, match="failed"):
            client(server, engine, timeout=0.5, max_retries=0).generate(PROMPTS[:1], SHORT)
        assert time.perf_counter() - tick < 2.5


@pytest.mark.parametrize("limit", [1, 3])
def test_requests_in_flight_never_exceed_the_limit(engine, limit):
    with CompletionServer(engine, delay=0.3) as server:
        out = client(server, engine, max_concurrency=limit).generate(PROMPTS * 3, SHORT)
        assert server.max_in_flight == limit and server.requests == 6
    assert [c.prompt_ids for c in out] == [tuple(engine.prompt_ids(p)) for p in PROMPTS * 3]


def test_bad_input_and_foreign_token_formats_are_typed_errors(engine):
    assert _token_id("token_id:42") == 42
    with pytest.raises(EngineError, match="token_id"):
        _token_id("hello")
    with pytest.raises(EngineError, match="max_concurrency"):
        OpenAIEngine("http://127.0.0.1:9/v1", "m", engine.tokenizer, max_concurrency=0)
