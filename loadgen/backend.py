"""The one backend: OpenAI-compatible HTTP (completions or chat), streamed, over aiohttp.

It fills a RequestRecord with raw times as the bytes arrive; metrics are derived later. The
client shares the cores with the server it measures, so its cost per chunk shows up in what
it measures: on 2 cores, every 1% of the machine a bystander takes slowed dyno's engine by about
2% (its threads wait for one another). aiohttp reads a chunk in ~50 us of CPU where httpx took
~120 us (64 streams at 32 in flight, 4160 chunks: 0.20 vs 0.50 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from loadgen.datasets import RequestSpec
from loadgen.schema import RequestRecord
from loadgen.tokens import TokenCounter

log = logging.getLogger(__name__)

# Called with the record as it changes phase: once when it is sent, once at its first token.
RecordHook = Callable[[RequestRecord], None]


@dataclass(frozen=True, slots=True)
class BackendConfig:
    base_url: str
    endpoint: str = "/v1/completions"
    model: str = ""
    api_key: str | None = None
    ignore_eos: bool = False
    request_timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    # Each request's id as X-Request-Id, so a server's records join ours. llama-cpp-python's
    # server takes that header only as a UUID and answers 400 to any other.
    request_id_header: bool = True

    @property
    def is_chat(self) -> bool:
        return "chat" in self.endpoint

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.endpoint.lstrip("/")


def make_client(config: BackendConfig, max_connections: int | None) -> aiohttp.ClientSession:
    """A session whose pool never caps the load (aiohttp's default stops at 100 connections,
    which would queue requests 101+); the timeout bounds each wait for the server's bytes."""
    connector = aiohttp.TCPConnector(limit=max_connections or 0)
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0, sock_read=config.request_timeout_s)
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout)


def make_body(config: BackendConfig, spec: RequestSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": config.model, "stream": True,
                            "stream_options": {"include_usage": True}, "temperature": 0.0}
    if config.is_chat:
        body["messages"] = spec.messages or [{"role": "user", "content": spec.prompt}]
    else:
        body["prompt"] = spec.prompt
    if spec.output_tokens is not None:
        body["max_tokens"] = spec.output_tokens
    if config.ignore_eos:
        body["ignore_eos"] = True
    body.update(config.extra_body)
    return body


class OpenAIBackend:
    def __init__(self, config: BackendConfig, client: aiohttp.ClientSession, counter: TokenCounter,
                 now: Callable[[], float]) -> None:
        self.config = config
        self.client = client
        self.counter = counter
        self.now = now

    async def send(self, spec: RequestSpec, record: RequestRecord, on_sent: RecordHook | None = None,
                   on_first_token: RecordHook | None = None) -> str:
        """Send one request, filling `record`; returns the generated text (for multi-turn).
        The hooks run on this loop between the stream's reads: keep them quick."""
        stream = _Stream(on_first_token)
        headers = {"X-Request-Id": record.request_id} if self.config.request_id_header else {}
        body = make_body(self.config, spec)
        record.send_time = self.now()
        if on_sent is not None:
            on_sent(record)
        try:
            async with self.client.post(self.config.url, json=body, headers=headers) as resp:
                record.status = resp.status
                if resp.status >= 400:
                    text = (await resp.read()).decode(errors="replace")
                    _fail(record, f"http_{resp.status}", _error_message(text))
                else:
                    await self._read(resp, stream, record)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as e:
            _fail(record, "timeout", f"{type(e).__name__}: no answer in {self.config.request_timeout_s:g}s")
        except aiohttp.ClientConnectorError as e:
            _fail(record, "connect", f"cannot connect to {self.config.base_url}: {e}")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as e:
            _fail(record, "disconnected", f"{type(e).__name__}: {e}")
        except aiohttp.ClientError as e:
            _fail(record, "http", f"{type(e).__name__}: {e}")
        record.end_time = self.now()
        if record.error_kind is None:
            self._count(spec, stream, record)
        return "".join(stream.texts)

    async def _read(self, resp: aiohttp.ClientResponse, stream: _Stream, record: RequestRecord) -> None:
        async for line in sse_lines(resp):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":  # read on to the body's end: a response left unread
                continue  # costs its keep-alive connection, and the next request a connect
            t = self.now()
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                _fail(record, "protocol", f"not JSON in stream: {payload[:120]!r}")
                return
            if "error" in data:
                _fail(record, "stream_error", _error_message(json.dumps(data)))
                return
            stream.take(data, t, self.config.is_chat, record)
        if not stream.texts:
            _fail(record, "empty", "the stream ended without any content")

    def _count(self, spec: RequestSpec, stream: _Stream, record: RequestRecord) -> None:
        """Tokens from the server's usage when reported; else from the tokenizer or chunks.
        Chunks are tokenized only when they cannot all be one token: tokenizing holds the
        event loop, and every other stream's timestamps with it."""
        record.usage_reported = stream.completion_tokens is not None
        record.input_tokens = stream.prompt_tokens if stream.prompt_tokens is not None else spec.input_tokens
        total = stream.completion_tokens
        if total is None:
            total = self.counter.count_text("".join(stream.texts)) if self.counter.is_exact else len(stream.texts)
        record.output_tokens = total
        if total == len(stream.texts):
            record.chunk_tokens = [1] * total
        else:
            record.chunk_tokens = spread(total, self.counter.count_chunks(stream.texts))


async def sse_lines(resp: aiohttp.ClientResponse):
    """Lines of an event stream as bytes, as they arrive (every microsecond here is added to
    the other streams' timestamps)."""
    buf = b""
    async for data in resp.content.iter_any():
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if buf:
        yield buf


class _Stream:
    """What arrived on one stream: chunk texts (times go straight into the record) and usage."""

    def __init__(self, on_first_token: RecordHook | None = None) -> None:
        self.on_first_token = on_first_token
        self.texts: list[str] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def take(self, data: dict, t: float, is_chat: bool, record: RequestRecord) -> None:
        if usage := data.get("usage"):
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
        if record.response_id is None and data.get("id"):
            record.response_id = str(data["id"])
        choices = data.get("choices") or []
        if not choices:
            return
        choice = choices[0]
        if is_chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        else:
            text = choice.get("text")
        if not text:  # vLLM opens chat streams with an empty role chunk: not a token
            return
        if record.first_token_time is None:  # once per stream: the per-token path stays as it was
            record.first_token_time = t
            if self.on_first_token is not None:
                self.on_first_token(record)
        record.chunk_times.append(t)
        self.texts.append(text)


def spread(total: int, weights: list[int]) -> list[int]:
    """Split `total` tokens over chunks in proportion to `weights` (largest remainder)."""
    if not weights:
        return []
    weights = [max(w, 1) for w in weights]
    if sum(weights) == total:
        return weights
    scale = total / sum(weights)
    raw = [w * scale for w in weights]
    out = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def _fail(record: RequestRecord, kind: str, message: str) -> None:
    record.error_kind = kind
    record.error = message[:500]


def _error_message(text: str) -> str:
    """The `message` of an OpenAI error body, else the text itself."""
    try:
        err = json.loads(text).get("error", {})
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, AttributeError):
        pass
    return text.strip()[:300]
