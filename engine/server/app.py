"""The FastAPI app: thin routes that map handler results to JSON, SSE or an OpenAI error."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.args import EngineArgs
from engine.async_llm import AsyncLLM, EngineDeadError
from engine.chat import load_chat_template
from engine.server.errors import ApiError, error_response
from engine.server.metrics import ServerMetrics
from engine.server.middleware import install_middleware
from engine.server.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                                    DetokenizeResponse, ModelCard, ModelList, TokenizeRequest,
                                    TokenizeResponse)
from engine.server.request_log import RequestLogger
from engine.server.serving_chat import ChatHandler, render_messages
from engine.server.serving_common import ServerContext
from engine.server.serving_completions import CompletionHandler
from engine.server.trace_log import TraceLog


def dyno_version() -> str:
    try:
        return version("llm-dyno")
    except PackageNotFoundError:
        return "0+unknown"


def make_context(args: EngineArgs, engine: AsyncLLM) -> ServerContext:
    info = engine.engine.info
    names = list(args.served_model_name or [args.model or info.model_name])
    return ServerContext(engine=engine, info=info, served_names=names, max_logprobs=args.max_logprobs,
                         chat_template=load_chat_template(args.chat_template),
                         response_role=args.response_role,
                         metrics=ServerMetrics(names[0], engine.stats, max_model_len=info.max_model_len),
                         request_logger=RequestLogger(args), trace_log=TraceLog(args.trace_log_directory))


def build_app(args: EngineArgs, engine: AsyncLLM) -> FastAPI:
    ctx = make_context(args, engine)
    app = FastAPI(title="dyno", version=dyno_version(), root_path=args.root_path or "")
    app.state.ctx = ctx
    _add_error_handlers(app)
    _add_completion_routes(app, ctx)
    _add_info_routes(app, ctx)
    install_middleware(app, args)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError):
        return error_response(e.status, e.message, e.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}", where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(EngineDeadError)
    async def dead(_: Request, e: EngineDeadError):
        return error_response(503, str(e))


async def _respond(result) -> Response:
    if hasattr(result, "__aiter__"):
        return StreamingResponse(result, media_type="text/event-stream")
    return JSONResponse(result.model_dump())


def _add_completion_routes(app: FastAPI, ctx: ServerContext) -> None:
    completions, chat = CompletionHandler(ctx), ChatHandler(ctx)

    @app.post("/v1/completions")
    async def create_completion(req: CompletionRequest, raw: Request):
        return await _respond(await completions.create(req, raw))

    @app.post("/v1/chat/completions")
    async def create_chat_completion(req: ChatCompletionRequest, raw: Request):
        return await _respond(await chat.create(req, raw))


def _add_info_routes(app: FastAPI, ctx: ServerContext) -> None:
    @app.get("/v1/models")
    async def models() -> ModelList:
        root = ctx.engine.engine.args.model or ctx.info.model_name
        return ModelList(data=[ModelCard(id=n, root=root, max_model_len=ctx.info.max_model_len)
                               for n in ctx.served_names])

    def tokenizer_for(model: str | None):
        ctx.check_model(model)
        if ctx.engine.tokenizer is None:
            raise ApiError(400, "the server runs with --skip-tokenizer-init: it has no tokenizer")
        return ctx.engine.tokenizer

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> TokenizeResponse:
        tokenizer = tokenizer_for(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise ApiError(400, "give exactly one of prompt or messages")
        if req.messages is not None:
            tokens = render_messages(ctx, req.messages, None, req.add_generation_prompt)[1]
        else:
            tokens = tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        return TokenizeResponse(count=len(tokens), max_model_len=ctx.info.max_model_len, tokens=tokens)

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> DetokenizeResponse:
        tokenizer = tokenizer_for(req.model)
        bad = [t for t in req.tokens if not 0 <= t < ctx.info.vocab_size]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary", "tokens")
        return DetokenizeResponse(prompt=tokenizer.decode(req.tokens))

    @app.get("/health")
    async def health():
        if ctx.engine.error is not None:
            return error_response(503, f"the engine stopped: {ctx.engine.error}")
        return Response(status_code=200)

    @app.get("/version")
    async def get_version():
        return {"version": dyno_version()}

    @app.get("/metrics")
    async def metrics():
        body, content_type = ctx.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/reset_prefix_cache")
    async def reset_prefix_cache():
        if not await ctx.engine.reset_prefix_cache():
            raise ApiError(400, "the prefix cache cannot be reset while requests hold blocks; retry when idle")
        return Response(status_code=200)
