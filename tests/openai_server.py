"""A small real OpenAI-compatible server for tests: ``/v1/completions`` answered by an HFEngine.

It speaks vLLM's dialect (``prompt`` as token ids, ``logprobs``, tokens returned as
``"token_id:<int>"``) over real HTTP on loopback, and can misbehave on purpose: answer 503 to
the first ``fail_first`` requests, or sleep ``delay`` seconds before answering. It records the
most requests it ever had in flight at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from memgym.engine import SamplingParams
from memgym.rollouts.hf import HFEngine


class CompletionServer(ThreadingHTTPServer):
    """Serves ``engine`` on ``127.0.0.1`` at a free port; use as a context manager."""

    daemon_threads = True

    def __init__(self, engine: HFEngine, fail_first: int = 0, delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.engine, self.fail_first, self.delay = engine, fail_first, delay
        self.requests = self.in_flight = self.max_in_flight = 0
        self.lock, self.generate_lock = threading.Lock(), threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> CompletionServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: CompletionServer

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.requests += 1
            fail = srv.requests <= srv.fail_first
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if fail:
                return self._send(503, {"error": {"message": "overloaded"}})
            time.sleep(srv.delay)
            params = SamplingParams(max_new_tokens=body["max_tokens"],
                                    temperature=body.get("temperature", 1.0),
                                    top_p=body.get("top_p", 1.0), seed=body.get("seed"))
            with srv.generate_lock:  # one model, one generation at a time
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                (out,) = srv.engine._generate([list(body["prompt"])], params)
            self._send(200, {
                "id": f"cmpl-{srv.requests}", "object": "text_completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "text": out.text, "finish_reason": "stop",
                             "logprobs": {"tokens": [f"token_id:{t}" for t in out.completion_ids],
                                          "token_logprobs": list(out.logprobs),
                                          "top_logprobs": None, "text_offset": None}}],
                "usage": {"prompt_tokens": len(out.prompt_ids),
                          "completion_tokens": len(out.completion_ids),
                          "total_tokens": len(out.prompt_ids) + len(out.completion_ids)}})
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client timed out and hung up
            self.wfile.write(data)
