"""A tiny OpenAI-compatible server with exact, configurable pacing (after GuideLLM's mock_server).

Tests use it to check the generator's metrics against known latencies; users use it to find
the generator's own ceiling (`dyno bench mock-server --port 8000 --ttft-ms 50`).

Pacing model, per request:
- it waits for one of `max_num_seqs` slots (unlimited by default): queueing shows as TTFT;
- the first chunk comes `ttft_ms + prefill_ms_per_token * prompt_tokens` after admission;
- each later chunk of `tokens_per_chunk` tokens comes `itl_ms + itl_per_seq_ms * running`
  per token after the previous one, `running` being the number of streams then active;
- output length is `output_len` when set, else the request's max_tokens (default 16).
Chunks are due at absolute deadlines, so timer overshoot never accumulates over a stream.
A token is one whitespace-separated word, also when the mock counts prompt tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs")


@dataclass(frozen=True, slots=True)
class MockPacing:
    ttft_ms: float = 50.0
    itl_ms: float = 10.0
    output_len: int | None = None
    tokens_per_chunk: int = 1
    prefill_ms_per_token: float = 0.0
    itl_per_seq_ms: float = 0.0
    max_num_seqs: int | None = None
    model: str = "mock"
    api_key: str | None = None

    def to_args(self) -> list[str]:
        """The command-line flags that recreate this pacing in a server process."""
        args: list[str] = []
        for name, value in asdict(self).items():
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        return args


class _Stats:
    """Prometheus metrics of one app (own registry: two mocks in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.running = Gauge("mock_num_requests_running", "streams producing tokens", registry=self.registry)
        self.waiting = Gauge("mock_num_requests_waiting", "requests waiting for a slot", registry=self.registry)
        self.requests = Counter("mock_requests", "requests finished", registry=self.registry)
        self.tokens = Counter("mock_generation_tokens", "tokens generated", registry=self.registry)


def count_tokens(text: str) -> int:
    return len(text.split())


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return " ".join(str(m.get("content") or "") for m in body["messages"])
    prompt = body.get("prompt", "")
    return " ".join(prompt) if isinstance(prompt, list) else str(prompt)


def _output_len(pacing: MockPacing, body: dict[str, Any]) -> int:
    if pacing.output_len is not None:
        return pacing.output_len
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(asked) if asked else 16


def _chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None, first: bool) -> dict:
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model, "choices": [choice]}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice]}


class _Engine:
    """The pacing state of one server: slots, running streams, metrics."""

    def __init__(self, pacing: MockPacing) -> None:
        self.pacing = pacing
        self.stats = _Stats()
        self.num_running = 0
        self.slots = asyncio.Semaphore(pacing.max_num_seqs) if pacing.max_num_seqs else None

    async def admit(self) -> None:
        if self.slots is not None:
            self.stats.waiting.inc()
            await self.slots.acquire()
            self.stats.waiting.dec()
        self.num_running += 1
        self.stats.running.inc()

    def release(self, num_tokens: int) -> None:
        self.num_running -= 1
        self.stats.running.dec()
        self.stats.requests.inc()
        self.stats.tokens.inc(num_tokens)
        if self.slots is not None:
            self.slots.release()

    def token_gap_s(self) -> float:
        return (self.pacing.itl_ms + self.pacing.itl_per_seq_ms * self.num_running) / 1000.0

    async def tokens(self, prompt_tokens: int, n: int) -> AsyncIterator[list[str]]:
        """Admit, then yield lists of words at their deadlines; always frees the slot."""
        await self.admit()
        sent = 0
        try:
            deadline = time.perf_counter() + self.first_delay_s(prompt_tokens)
            while sent < n:
                k = min(self.pacing.tokens_per_chunk, n - sent)
                if sent:
                    deadline += self.token_gap_s() * k
                await _sleep_until(deadline)
                yield [WORDS[(sent + i) % len(WORDS)] for i in range(k)]
                sent += k
        finally:
            self.release(sent)

    def first_delay_s(self, prompt_tokens: int) -> float:
        return (self.pacing.ttft_ms + self.pacing.prefill_ms_per_token * prompt_tokens) / 1000.0


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def make_app(pacing: MockPacing) -> FastAPI:
    app = FastAPI(title="dyno mock OpenAI server")
    engine = _Engine(pacing)

    def unauthorized(request: Request) -> JSONResponse | None:
        if pacing.api_key and request.headers.get("authorization") != f"Bearer {pacing.api_key}":
            err = {"message": "invalid API key", "type": "invalid_request_error", "code": 401}
            return JSONResponse({"error": err}, status_code=401)
        return None

    async def generate(request: Request, kind: str):
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await request.json()
        rid = request.headers.get("x-request-id") or f"mock-{uuid.uuid4().hex}"
        prompt_tokens = count_tokens(_prompt_text(body))
        n = _output_len(pacing, body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _sse(engine, kind, rid, prompt_tokens, n, include_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers={"x-request-id": rid})
        words = [w async for chunk in engine.tokens(prompt_tokens, n) for w in chunk]
        return JSONResponse(_full_response(kind, rid, pacing.model, words, prompt_tokens))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await generate(request, "chat")

    @app.get("/v1/models")
    async def models(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {"object": "list", "data": [{"id": pacing.model, "object": "model", "owned_by": "dyno-mock"}]}

    @app.get("/health")
    async def health():
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(engine.stats.registry).decode())

    return app


async def _sse(engine: _Engine, kind: str, rid: str, prompt_tokens: int, n: int, include_usage: bool):
    model = engine.pacing.model
    sent = 0
    async for words in engine.tokens(prompt_tokens, n):
        if kind == "chat" and not sent:  # as vLLM: an empty role chunk just before the first token
            yield _data(_chunk(kind, rid, model, None, None, first=True))
        sent += len(words)
        finish = "length" if sent >= n else None
        yield _data(_chunk(kind, rid, model, " " + " ".join(words), finish, first=False))
    if include_usage:
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent, "total_tokens": prompt_tokens + sent}
        yield _data({"id": rid, "object": "chunk", "model": model, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _full_response(kind: str, rid: str, model: str, words: list[str], prompt_tokens: int) -> dict:
    text = " " + " ".join(words)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        return {"id": rid, "object": "chat.completion", "model": model, "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": text, "finish_reason": "length"}
    return {"id": rid, "object": "text_completion", "model": model, "choices": [choice], "usage": usage}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, MockPacing]:
    p = argparse.ArgumentParser(prog="dyno bench mock-server", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    for f in MockPacing.__dataclass_fields__.values():
        kind = {"float": float, "int": int, "str": str}[str(f.type).split(" ")[0]]
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    ns = p.parse_args(argv)
    pacing = MockPacing(**{name: getattr(ns, name) for name in MockPacing.__dataclass_fields__})
    return ns, pacing


def serve(argv: list[str] | None = None) -> None:
    import uvicorn

    ns, pacing = parse_args(sys.argv[1:] if argv is None else argv)
    # Bind the socket here so port 0 works: the parent reads the port from our first line.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it Nagle holds each token chunk until the client
    # ACKs the previous write, and delayed ACKs add ~40 ms to a reused connection's TTFT.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((ns.host, ns.port))
    sock.listen(4096)
    print(f"listening on {ns.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(make_app(pacing), log_level="warning", access_log=False, backlog=4096,
                            timeout_keep_alive=30, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    serve()
