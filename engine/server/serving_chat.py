"""POST /v1/chat/completions: messages through the chat template, then as completions."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import Request

from engine.chat import load_chat_template
from engine.outputs import CompletionOutput, Logprob
from engine.server.errors import ApiError
from engine.server.protocol import (ChatChoice, ChatCompletionChunk, ChatCompletionRequest,
                                    ChatCompletionResponse, ChatLogprobs, ChatMessage,
                                    ChatResponseMessage, ChatStreamChoice, DeltaMessage,
                                    TokenLogprob, TopLogprob, UsageInfo, random_id)
from engine.server.serving_common import (ServerContext, check_logprobs, collect_unless_disconnected,
                                          observed, output_budget, sampling_params, sse)


def message_dicts(messages: list[ChatMessage]) -> list[dict]:
    """Messages as transformers' apply_chat_template takes them; text parts joined."""
    out = []
    for m in messages:
        content = m.content
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") != "text":
                    raise ApiError(400, f"content part type {part.get('type')!r} is not supported; "
                                        "send text parts", "messages")
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        entry = {"role": m.role, "content": content or ""}
        if m.name:
            entry["name"] = m.name
        out.append(entry)
    return out


def render_messages(ctx: ServerContext, messages: list[ChatMessage], template: str | None,
                    add_generation_prompt: bool, continue_final_message: bool = False) -> tuple[str, list[int]]:
    tokenizer = ctx.engine.tokenizer
    if tokenizer is None:
        raise ApiError(400, "chat needs a tokenizer, but the server runs with --skip-tokenizer-init")
    try:
        template = load_chat_template(template) if template else ctx.chat_template
    except ValueError as e:
        raise ApiError(400, str(e), "chat_template") from None
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ApiError(400, "this model has no chat template: start the server with --chat-template")
    try:
        text = tokenizer.apply_chat_template(
            message_dicts(messages), chat_template=template, tokenize=False,
            add_generation_prompt=add_generation_prompt and not continue_final_message,
            continue_final_message=continue_final_message)
    except ApiError:
        raise
    except Exception as e:  # a template that fails on these messages is the request's problem
        raise ApiError(400, f"the chat template failed on these messages: {e}", "messages") from None
    # The template carries its special tokens; encoding must not add another BOS.
    return text, tokenizer.encode(text, add_special_tokens=False)


class ChatHandler:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def create(self, req: ChatCompletionRequest, raw: Request) -> ChatCompletionResponse | AsyncIterator[str]:
        ctx = self.ctx
        ctx.check_model(req.model)
        top = req.top_logprobs if req.logprobs else None
        if req.top_logprobs is not None and not req.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs=true", "top_logprobs")
        check_logprobs(ctx, top, "top_logprobs")
        text, ids = render_messages(ctx, req.messages, req.chat_template, req.add_generation_prompt,
                                    req.continue_final_message)
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = sampling_params(req, max_tokens=output_budget(ctx, len(ids), requested),
                                 logprobs=(top or 0) if req.logprobs else None,
                                 prompt_logprobs=req.prompt_logprobs)
        rid = ctx.engine_request_id(raw)
        try:
            processed = ctx.engine.process(rid, {"prompt": text, "prompt_token_ids": ids}, params)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        stream = observed(ctx, rid, text, params, ctx.engine.stream(processed))
        role = ctx.response_role if req.add_generation_prompt else req.messages[-1].role
        echo = req.messages[-1].content if req.echo and isinstance(req.messages[-1].content, str) else ""
        response_id = random_id("chatcmpl")
        if req.stream:
            return self._stream(req, response_id, role, echo or "", len(ids), top, stream)
        final = (await collect_unless_disconnected(raw, [stream]))[0]
        choices = [ChatChoice(index=c.index, message=ChatResponseMessage(role=role, content=(echo or "") + c.text),
                              logprobs=self._logprobs(c, top) if req.logprobs else None,
                              finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                   for c in final.outputs]
        num_out = sum(len(c.token_ids) for c in final.outputs)
        return ChatCompletionResponse(id=response_id, model=ctx.model_name, choices=choices,
                                      usage=UsageInfo(prompt_tokens=len(ids), completion_tokens=num_out,
                                                      total_tokens=len(ids) + num_out))

    def _logprobs(self, c: CompletionOutput, top: int | None) -> ChatLogprobs:
        content = []
        for token_id, entry in zip(c.token_ids, c.logprobs or []):
            chosen = entry[token_id]
            ranked = sorted((v.rank, tid, v) for tid, v in entry.items() if v.rank <= (top or 0))
            content.append(TokenLogprob(
                **_top(chosen), top_logprobs=[TopLogprob(**_top(v)) for _, _, v in ranked]))
        return ChatLogprobs(content=content)

    async def _stream(self, req, response_id, role, echo, num_prompt, top, stream) -> AsyncIterator[str]:
        model = self.ctx.model_name
        started: set[int] = set()
        num_out = 0
        async for out in stream:
            for c in out.outputs:
                if c.index not in started:
                    started.add(c.index)
                    first = ChatStreamChoice(index=c.index, delta=DeltaMessage(role=role, content=echo))
                    yield sse(ChatCompletionChunk(id=response_id, model=model, choices=[first]).model_dump_json(exclude={"usage"}))
                if not (c.text or c.token_ids or c.finish_reason):
                    continue
                num_out += len(c.token_ids)
                choice = ChatStreamChoice(index=c.index, delta=DeltaMessage(content=c.text),
                                          logprobs=self._logprobs(c, top) if req.logprobs else None,
                                          finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                yield sse(ChatCompletionChunk(id=response_id, model=model, choices=[choice]).model_dump_json(exclude={"usage"}))
        if req.stream_options and req.stream_options.include_usage:
            usage = UsageInfo(prompt_tokens=num_prompt, completion_tokens=num_out, total_tokens=num_prompt + num_out)
            yield sse(ChatCompletionChunk(id=response_id, model=model, choices=[], usage=usage).model_dump_json())
        yield sse("[DONE]")


def _top(lp: Logprob) -> dict:
    token = lp.decoded_token or ""
    return {"token": token, "logprob": max(lp.logprob, -9999.0), "bytes": list(token.encode("utf-8"))}
