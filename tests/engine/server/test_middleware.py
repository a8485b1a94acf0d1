"""engine/server/middleware.py on a small FastAPI app: request ids, API key, CORS, --middleware."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from engine.args import ArgsError, EngineArgs
from engine.server.middleware import check_middleware, install_middleware

KEY = "sk-test-123"
HERE = "tests.engine.server.user_middleware"


def make_app(**flags) -> FastAPI:
    args = EngineArgs(**flags)
    app = FastAPI()

    @app.get("/v1/models")
    async def models(request: Request):
        return {"request_id": request.state.request_id}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return {"ok": True}

    @app.get("/health")
    async def health():
        return {}

    @app.get("/v1/stream")
    async def stream():
        async def chunks():
            for i in range(3):
                yield f"data: {i}\n\n"
        return StreamingResponse(chunks(), media_type="text/event-stream")

    install_middleware(app, args)
    return app


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    monkeypatch.delenv("DYNO_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)


# -- request ids -----------------------------------------------------------------------------


def test_request_id_is_generated_and_echoed():
    client = TestClient(make_app())
    r1, r2 = client.get("/v1/models"), client.get("/v1/models")
    rid = r1.headers["x-request-id"]
    assert rid.startswith("req-") and len(rid) == 4 + 32
    assert r1.json()["request_id"] == rid
    assert r2.headers["x-request-id"] != rid


def test_client_request_id_is_used_and_echoed():
    r = TestClient(make_app()).get("/v1/models", headers={"X-Request-Id": "my-trace-42"})
    assert r.headers["x-request-id"] == "my-trace-42"
    assert r.json()["request_id"] == "my-trace-42"
    assert r.headers.get_list("x-request-id") == ["my-trace-42"]


def test_request_id_on_errors_and_streams():
    client = TestClient(make_app())
    assert client.get("/nope", headers={"X-Request-Id": "a"}).headers["x-request-id"] == "a"
    r = client.get("/v1/stream", headers={"X-Request-Id": "s"})
    assert r.headers["x-request-id"] == "s" and r.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


# -- API key ---------------------------------------------------------------------------------


def assert_401(r):
    assert r.status_code == 401
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "API key" in body["error"]["message"] and body["error"]["code"] == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["x-request-id"]


def test_api_key_guards_v1_routes():
    client = TestClient(make_app(api_key=KEY))
    assert_401(client.get("/v1/models"))
    assert_401(client.post("/v1/completions", json={}))
    assert_401(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}))
    assert_401(client.get("/v1/models", headers={"Authorization": KEY}))
    assert_401(client.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}))
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/health").status_code == 200  # not under /v1


@pytest.mark.parametrize("var", ["DYNO_API_KEY", "VLLM_API_KEY"])
def test_api_key_from_environment(monkeypatch, var):
    monkeypatch.setenv(var, "env-key")
    client = TestClient(make_app())
    assert_401(client.get("/v1/models"))
    assert client.get("/v1/models", headers={"Authorization": "Bearer env-key"}).status_code == 200


def test_flag_wins_over_environment(monkeypatch):
    monkeypatch.setenv("DYNO_API_KEY", "env-key")
    client = TestClient(make_app(api_key=KEY))
    assert_401(client.get("/v1/models", headers={"Authorization": "Bearer env-key"}))
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_no_key_no_check():
    assert TestClient(make_app()).get("/v1/models").status_code == 200


def test_api_key_under_root_path():
    client = TestClient(make_app(api_key=KEY), root_path="/proxy")
    assert_401(client.get("/proxy/v1/models"))
    ok = client.get("/proxy/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


# -- CORS ------------------------------------------------------------------------------------


def preflight(client, origin="https://app.example", method="POST", headers="authorization,content-type"):
    return client.options("/v1/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


def test_cors_defaults_allow_any_origin():
    client = TestClient(make_app(api_key=KEY))
    r = preflight(client)
    assert r.status_code == 200  # the key check lets preflights through
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["x-request-id"]
    # A browser can read the 401 (CORS headers) and the request id (exposed).
    denied = client.post("/v1/completions", json={}, headers={"Origin": "https://app.example"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "*"
    assert "x-request-id" in denied.headers["access-control-expose-headers"].lower()


def test_cors_restricted_by_flags():
    client = TestClient(make_app(allowed_origins=["https://good.example"], allowed_methods=["GET", "POST"],
                                 allowed_headers=["Authorization", "Content-Type"], allow_credentials=True))
    ok = preflight(client, origin="https://good.example")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://good.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert set(ok.headers["access-control-allow-methods"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "DELETE" not in ok.headers["access-control-allow-methods"]
    assert preflight(client, origin="https://evil.example").status_code == 400
    assert preflight(client, origin="https://good.example", method="DELETE").status_code == 400
    assert preflight(client, origin="https://good.example", headers="x-custom").status_code == 400
    simple = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_credentials_off_by_default():
    r = preflight(TestClient(make_app(allowed_origins=["https://good.example"])), origin="https://good.example")
    assert "access-control-allow-credentials" not in r.headers


# -- --middleware ----------------------------------------------------------------------------


def test_user_middleware_class_and_function():
    client = TestClient(make_app(middleware=[f"{HERE}.AddHeaderMiddleware", f"{HERE}.add_header"]))
    r = client.get("/v1/models", headers={"X-Request-Id": "mw-1"})
    assert r.headers["x-test-class"] == "yes"
    assert r.headers["x-test-function"] == "mw-1"  # user middlewares see the request id


def test_user_middleware_sees_rejected_requests_too():
    client = TestClient(make_app(api_key=KEY, middleware=[f"{HERE}.AddHeaderMiddleware"]))
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.headers["x-test-class"] == "yes"


@pytest.mark.parametrize("path, words", [
    ("nomodule_xyz.Thing", "cannot import module 'nomodule_xyz'"),
    (f"{HERE}.Missing", "has no attribute 'Missing'"),
    (f"{HERE}.NOT_MIDDLEWARE", "not an ASGI middleware class"),
    ("Plain", "give an import path"),
])
def test_bad_middleware_path_is_one_line_error(path, words):
    args = EngineArgs(middleware=[path])
    with pytest.raises(ArgsError) as info:
        check_middleware(args)
    message = str(info.value)
    assert message.startswith(f"--middleware {path}") and words in message and "\n" not in message
    with pytest.raises(ArgsError):
        install_middleware(FastAPI(), args)
