"""The server's middleware: request ids, CORS, the API key, and the user's --middleware.

Order, outermost first (so every response, a 401 or a CORS preflight included, carries its
X-Request-Id, and a browser can read a 401 because it carries the CORS headers):

    RequestIdMiddleware -> --middleware (in the order given) -> CORS -> ApiKeyMiddleware -> routes

Request ids and the key check are plain ASGI middleware, not BaseHTTPMiddleware: they do not
buffer streamed responses and do not hide client disconnects from the handlers.
"""

from __future__ import annotations

import hmac
import importlib
import inspect
import json
import os
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.args import ArgsError, EngineArgs

REQUEST_ID_HEADER = "X-Request-Id"
API_KEY_ENV_VARS = ("DYNO_API_KEY", "VLLM_API_KEY")
MAX_REQUEST_ID_LEN = 256


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class RequestIdMiddleware:
    """request.state.request_id = the client's X-Request-Id, else a fresh one; echoed back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given.decode("latin-1").strip() if given else ""
        if not request_id or len(request_id) > MAX_REQUEST_ID_LEN:
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        raw = request_id.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", raw))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_body(status: int, message: str, type_: str, code: Any) -> dict:
    """OpenAI's error format (same shape as engine/server/errors.py)."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class ApiKeyMiddleware:
    """Every /v1/* route needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode("utf-8")

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization") or b""
        scheme, _, token = value.strip().partition(b" ")
        # compare_digest on both checks, so the time does not tell which one failed
        ok_token = hmac.compare_digest(token.strip(), self.expected)
        return ok_token and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" \
                or not _is_api_path(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body(
            401, "invalid or missing API key: send the header 'Authorization: Bearer <key>' "
                 "with the key the server was started with (--api-key)",
            "AuthenticationError", 401)).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def _is_api_path(scope: Scope) -> bool:
    path = scope.get("path", "")
    root = scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root):]
    return path == "/v1" or path.startswith("/v1/")


def api_key(args: EngineArgs) -> str | None:
    """--api-key, else the first of DYNO_API_KEY / VLLM_API_KEY that is set and not empty."""
    if args.api_key:
        return args.api_key
    for name in API_KEY_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def load_user_middleware(path: str) -> tuple[str, Any]:
    """Resolve one --middleware path: ("class", cls) or ("function", fn); ArgsError if bad.

    Call it before loading the model to fail fast; install_middleware calls it again.
    """
    module_name, _, attr = path.strip().rpartition(".")
    if not module_name or not attr:
        raise ArgsError(f"--middleware {path}: give an import path such as "
                        f"'package.module.ClassOrFunction'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's path
        raise ArgsError(f"--middleware {path}: cannot import module {module_name!r} "
                        f"({type(e).__name__}: {e}); check the path and PYTHONPATH") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ArgsError(f"--middleware {path}: module {module_name!r} has no attribute {attr!r}")
    if inspect.isclass(obj):
        return "class", obj
    if inspect.iscoroutinefunction(obj):
        return "function", obj
    raise ArgsError(f"--middleware {path}: not an ASGI middleware class nor an async function "
                    f"(request, call_next)")


def check_middleware(args: EngineArgs) -> None:
    """Raise ArgsError naming the first --middleware path that cannot be used."""
    for path in args.middleware or ():
        load_user_middleware(path)


def install_middleware(app: FastAPI, args: EngineArgs) -> None:
    """Add the key check, CORS, the user's middlewares and request ids, innermost first."""
    key = api_key(args)
    if key:
        app.add_middleware(ApiKeyMiddleware, api_key=key)
    app.add_middleware(CORSMiddleware, allow_origins=list(args.allowed_origins),
                       allow_credentials=args.allow_credentials,
                       allow_methods=list(args.allowed_methods),
                       allow_headers=list(args.allowed_headers),
                       expose_headers=[REQUEST_ID_HEADER])
    # Starlette puts each added middleware outside the previous ones: add the user's in reverse
    # so the first --middleware given is the outermost of them.
    for path in reversed(list(args.middleware or ())):
        kind, obj = load_user_middleware(path)
        if kind == "class":
            app.add_middleware(obj)
        else:
            app.middleware("http")(obj)
    app.add_middleware(RequestIdMiddleware)


def request_id_of(request: Any) -> str:
    """The request's id (set by RequestIdMiddleware; a fresh one if it did not run)."""
    state = getattr(request, "state", None)
    request_id = getattr(state, "request_id", None) if state is not None else None
    return request_id or new_request_id()

