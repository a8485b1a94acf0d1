"""Middlewares for --middleware tests: an ASGI class and an HTTP function, each adding a header."""

from __future__ import annotations


class AddHeaderMiddleware:
    """ASGI middleware: X-Test-Class: yes on every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-test-class", b"yes")]}
            await send(message)

        await self.app(scope, receive, send_with_header)


async def add_header(request, call_next):
    """HTTP middleware function: X-Test-Function carries the request id the server assigned."""
    response = await call_next(request)
    response.headers["X-Test-Function"] = getattr(request.state, "request_id", "none")
    return response


NOT_MIDDLEWARE = 42
