"""POST /v1/completions: prompts in, engine calls, a full response or an SSE stream out."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import Request

from engine.outputs import CompletionOutput, RequestOutput
from engine.server.errors import ApiError
from engine.server.protocol import (CompletionChoice, CompletionLogprobs, CompletionRequest,
                                    CompletionResponse, UsageInfo, random_id)
from engine.server.serving_common import (ServerContext, check_logprobs, collect_unless_disconnected,
                                          merge, observed, output_budget, sampling_params, sse)


class CompletionHandler:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def create(self, req: CompletionRequest, raw: Request) -> CompletionResponse | AsyncIterator[str]:
        ctx = self.ctx
        ctx.check_model(req.model)
        if req.suffix:
            raise ApiError(400, "suffix is not supported", "suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise ApiError(400, "best_of must equal n (dyno returns every sampled sequence)", "best_of")
        check_logprobs(ctx, req.logprobs, "logprobs")
        check_logprobs(ctx, req.prompt_logprobs, "prompt_logprobs")
        prompts = self._tokenize(req.prompt)
        response_id = random_id("cmpl")
        streams, texts = [], []
        for i, (text, ids) in enumerate(prompts):
            params = sampling_params(
                req, max_tokens=output_budget(ctx, len(ids), req.max_tokens, "prompt"),
                logprobs=req.logprobs,
                prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else req.prompt_logprobs)
            rid = ctx.engine_request_id(raw, f"-{i}" if len(prompts) > 1 else "")
            try:
                processed = ctx.engine.process(rid, {"prompt": text, "prompt_token_ids": ids}, params)
            except ValueError as e:
                raise ApiError(400, str(e)) from None
            streams.append(observed(ctx, rid, text if text is not None else ids, params,
                                    ctx.engine.stream(processed)))
            texts.append(text if text is not None else self._decode(ids))
        if req.stream:
            return self._stream(req, response_id, prompts, texts, streams)
        finals = await collect_unless_disconnected(raw, streams)
        return self._response(req, response_id, texts, finals)

    def _tokenize(self, prompt) -> list[tuple[str | None, list[int]]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        elif prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        if not prompt:
            raise ApiError(400, "prompt must not be empty", "prompt")
        tokenizer = self.ctx.engine.tokenizer
        out = []
        for p in prompt:
            if isinstance(p, str):
                if tokenizer is None:
                    raise ApiError(400, "this server runs with --skip-tokenizer-init: send token ids", "prompt")
                out.append((p, tokenizer.encode(p)))
            else:
                out.append((None, list(p)))
        return out

    def _decode(self, ids: list[int]) -> str:
        tok = self.ctx.engine.tokenizer
        return tok.decode(ids) if tok is not None else ""

    def _response(self, req, response_id, texts, finals: list[RequestOutput]) -> CompletionResponse:
        choices, num_prompt, num_out = [], 0, 0
        for i, (text, out) in enumerate(zip(texts, finals)):
            num_prompt += len(out.prompt_token_ids)
            for c in out.outputs:
                num_out += len(c.token_ids)
                choices.append(CompletionChoice(
                    index=i * req.n + c.index, text=(text if req.echo else "") + c.text,
                    logprobs=self._logprobs(req, out, c, text) if req.logprobs is not None else None,
                    finish_reason=c.finish_reason, stop_reason=c.stop_reason))
        return CompletionResponse(id=response_id, model=self.ctx.model_name, choices=choices,
                                  usage=UsageInfo(prompt_tokens=num_prompt, completion_tokens=num_out,
                                                  total_tokens=num_prompt + num_out))

    def _logprobs(self, req, out: RequestOutput, c: CompletionOutput, prompt_text: str,
                  echo_prompt: bool = True, offset: int = 0) -> CompletionLogprobs:
        lp = CompletionLogprobs()
        entries: list = []
        if req.echo and echo_prompt and out.prompt_logprobs is not None:
            entries += list(zip(out.prompt_token_ids, out.prompt_logprobs))
        entries += list(zip(c.token_ids, c.logprobs or []))
        for token_id, entry in entries:
            token = self._token_text(token_id, entry)
            lp.text_offset.append(offset)
            offset += len(token)
            lp.tokens.append(token)
            lp.token_logprobs.append(entry[token_id].logprob if entry else None)
            lp.top_logprobs.append({(v.decoded_token or ""): v.logprob for v in entry.values()} if entry else None)
        return lp

    def _token_text(self, token_id: int, entry) -> str:
        if entry and token_id in entry and entry[token_id].decoded_token is not None:
            return entry[token_id].decoded_token
        return self._decode([token_id])

    async def _stream(self, req, response_id, prompts, texts, streams) -> AsyncIterator[str]:
        num_prompt = sum(len(ids) for _, ids in prompts)
        num_out = 0
        echoed: set[int] = set()
        offsets: dict[int, int] = {}
        async for i, out in merge(streams):
            for c in out.outputs:
                if not (c.text or c.token_ids or c.finish_reason):
                    continue
                index = i * req.n + c.index
                prefix = texts[i] if req.echo and index not in echoed else ""
                logprobs = None
                if req.logprobs is not None:
                    logprobs = self._logprobs(req, out, c, texts[i], echo_prompt=index not in echoed,
                                              offset=offsets.get(index, 0))
                    offsets[index] = (logprobs.text_offset[-1] + len(logprobs.tokens[-1])
                                      if logprobs.tokens else offsets.get(index, 0))
                echoed.add(index)
                num_out += len(c.token_ids)
                choice = CompletionChoice(index=index, text=prefix + c.text, logprobs=logprobs,
                                          finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                yield sse(CompletionResponse(id=response_id, model=self.ctx.model_name,
                                             choices=[choice]).model_dump_json(exclude={"usage"}))
        if req.stream_options and req.stream_options.include_usage:
            usage = UsageInfo(prompt_tokens=num_prompt, completion_tokens=num_out, total_tokens=num_prompt + num_out)
            yield sse(CompletionResponse(id=response_id, model=self.ctx.model_name, choices=[],
                                         usage=usage).model_dump_json())
        yield sse("[DONE]")
