"""What both completion endpoints share: model check, sampling params, length limits, request
ids, streaming with metrics and logs, and noticing a client that went away."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Request

from engine.async_llm import AsyncLLM
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from engine.server.errors import ApiError
from engine.server.metrics import ServerMetrics
from engine.server.protocol import SamplingFields
from engine.server.request_log import RequestLogger
from engine.server.trace_log import TraceLog
from engine.setup import EngineInfo

_DISCONNECT_POLL_S = 0.5


@dataclass
class ServerContext:
    engine: AsyncLLM
    info: EngineInfo
    served_names: list[str]
    max_logprobs: int
    chat_template: str | None
    response_role: str
    metrics: ServerMetrics
    request_logger: RequestLogger
    trace_log: TraceLog

    @property
    def model_name(self) -> str:
        return self.served_names[0]

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.served_names:
            raise ApiError(404, f"The model `{name}` does not exist; this server serves "
                                f"{', '.join(self.served_names)}.", "model")

    def engine_request_id(self, raw: Request, suffix: str = "") -> str:
        """The client's X-Request-Id when it gave one, so its records join ours."""
        base = getattr(raw.state, "request_id", None) or raw.headers.get("x-request-id")
        rid = f"{base or 'req'}{suffix}"
        while self.engine.is_running(rid):  # a client reusing an id concurrently
            rid = f"{base}{suffix}-{time.monotonic_ns() % 10**8}"
        return rid


MAX_N = 128  # OpenAI's own bound; a larger n would only queue work nobody can read


def sampling_params(req: SamplingFields, *, max_tokens: int, logprobs: int | None,
                    prompt_logprobs: int | None) -> SamplingParams:
    if req.n > MAX_N:
        raise ApiError(400, f"n must be at most {MAX_N}, got {req.n}", "n")
    bias = None
    if req.logit_bias:
        try:
            bias = {int(k): v for k, v in req.logit_bias.items()}
        except ValueError:
            raise ApiError(400, "logit_bias keys must be token ids", "logit_bias") from None
    fields = dict(
        n=req.n, temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, top_k=-1 if req.top_k is None else req.top_k,
        min_p=req.min_p or 0.0, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        seed=req.seed, stop=req.stop, stop_token_ids=req.stop_token_ids,
        include_stop_str_in_output=req.include_stop_str_in_output, ignore_eos=req.ignore_eos,
        max_tokens=max_tokens, min_tokens=req.min_tokens, logprobs=logprobs,
        prompt_logprobs=prompt_logprobs, logit_bias=bias, skip_special_tokens=req.skip_special_tokens,
        spaces_between_special_tokens=req.spaces_between_special_tokens)
    try:
        return SamplingParams(**fields)
    except ValueError as e:
        raise ApiError(400, str(e)) from None


def output_budget(ctx: ServerContext, num_prompt_tokens: int, requested: int | None,
                  what: str = "messages") -> int:
    """max_tokens, checked against the context length with the numbers in the message."""
    max_len = ctx.info.max_model_len
    if requested is not None and requested < 1:
        raise ApiError(400, f"max_tokens must be at least 1, got {requested}", "max_tokens")
    if num_prompt_tokens >= max_len or (requested is not None and num_prompt_tokens + requested > max_len):
        asked = num_prompt_tokens + (requested or 0)
        raise ApiError(400, f"This model's maximum context length is {max_len} tokens. However, you "
                            f"requested {asked} tokens ({num_prompt_tokens} in the {what}, "
                            f"{requested or 0} in the completion). Please reduce the length of the "
                            f"{what} or completion.", "max_tokens")
    return requested if requested is not None else max_len - num_prompt_tokens


def check_logprobs(ctx: ServerContext, value: int | None, name: str) -> None:
    if value is not None and not 0 <= value <= ctx.max_logprobs:
        raise ApiError(400, f"{name} must be between 0 and {ctx.max_logprobs} (--max-logprobs), "
                            f"got {value}", name)


async def observed(ctx: ServerContext, request_id: str, prompt: Any, params: SamplingParams,
                   stream: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
    """Pass outputs through while feeding /metrics, the request log and the trace log."""
    ctx.request_logger.received(request_id, prompt, params)
    start = last = time.monotonic()
    num_out = 0
    try:
        async for out in stream:
            now = time.monotonic()
            new = sum(len(c.token_ids) for c in out.outputs)
            if new:
                if num_out == 0:
                    ctx.metrics.observe_first_token(now - start)
                else:
                    ctx.metrics.observe_inter_token(now - last, new)
                num_out += new
                last = now
            if out.finished:
                _record_finished(ctx, request_id, out, start, num_out)
            yield out
    finally:
        await stream.aclose()  # now, not at garbage collection: closing aborts the request


def _record_finished(ctx: ServerContext, request_id: str, out: RequestOutput, start: float,
                     num_out: int) -> None:
    e2e = time.monotonic() - start
    reason = out.outputs[0].finish_reason if out.outputs else None
    m = out.metrics
    queue_s = m.first_scheduled_time - m.arrival_time if m and m.first_scheduled_time else None
    ctx.metrics.observe_finished(e2e_s=e2e, queue_s=queue_s, num_prompt_tokens=len(out.prompt_token_ids),
                                 num_generation_tokens=num_out, finish_reason=reason or "abort")
    ctx.request_logger.finished(request_id, num_prompt_tokens=len(out.prompt_token_ids),
                                num_output_tokens=num_out, finish_reason=reason, e2e_s=e2e)
    if m is not None:
        to_wall = time.time() - time.monotonic()
        ctx.trace_log.write(
            request_id=request_id, arrival=m.arrival_time + to_wall,
            scheduled=m.first_scheduled_time + to_wall if m.first_scheduled_time else None,
            first_token=m.first_token_time + to_wall if m.first_token_time else None,
            finished=(m.finished_time or time.monotonic()) + to_wall,
            num_prompt_tokens=len(out.prompt_token_ids), num_output_tokens=num_out, finish_reason=reason)


async def merge(streams: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """Interleave several async iterators as items arrive, tagged with their position."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i, stream):
        try:
            async for item in stream:
                await queue.put((i, item))
        except BaseException as e:  # surfaced to the consumer below
            await queue.put((i, e))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        for s in streams:
            await s.aclose()


async def collect_unless_disconnected(raw: Request, streams: list[AsyncIterator[RequestOutput]]
                                      ) -> list[RequestOutput]:
    """The last output of each stream; a client that hangs up aborts them all."""
    finals: list[RequestOutput | None] = [None] * len(streams)

    async def consume():
        async for i, out in merge(streams):
            finals[i] = out if finals[i] is None else _add_delta(finals[i], out)

    task = asyncio.create_task(consume())
    while not task.done():
        await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
        if not task.done() and await raw.is_disconnected():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            raise ApiError(499, "client disconnected")
    task.result()
    return finals


def _add_delta(total: RequestOutput, delta: RequestOutput) -> RequestOutput:
    """Streams carry deltas; a full response is their sum."""
    by_index = {c.index: c for c in total.outputs}
    for d in delta.outputs:
        c = by_index.get(d.index)
        if c is None:
            total.outputs.append(d)
            continue
        c.text += d.text
        c.token_ids = c.token_ids + d.token_ids
        if d.logprobs is not None:
            c.logprobs = (c.logprobs or []) + d.logprobs
        c.cumulative_logprob = d.cumulative_logprob
        if d.finish_reason is not None:
            c.finish_reason, c.stop_reason = d.finish_reason, d.stop_reason
    total.outputs.sort(key=lambda c: c.index)
    total.finished = delta.finished
    total.metrics = delta.metrics
    total.num_cached_tokens = delta.num_cached_tokens
    if delta.prompt_logprobs is not None:
        total.prompt_logprobs = delta.prompt_logprobs
    return total


def sse(payload: Any) -> str:
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {body}\n\n"
