"""The server flags on a real `dyno serve` process: each flag's effect, seen from outside.

Three servers, one per module-scoped fixture, each carrying several flags that do not get in
each other's way:
- `main`: --api-key, CORS flags, --root-path, --middleware (class and function),
  --served-model-name, --max-log-len, --trace-log-directory, --enable-prefix-caching;
- `tls`: mutual TLS (--ssl-* with certificates made here), the API key from VLLM_API_KEY,
  --log-format json, --disable-log-requests, --uvicorn-log-level warning;
- a plain one per SIGTERM test.
"""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .live import LiveServer, wait_for
from .tls_helpers import make_certs

KEY = "sk-dyno-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
NAMES = ["dyno-a", "dyno-alias"]
MW = "tests.engine.server.user_middleware"
MAX_LOG_LEN = 12


@pytest.fixture(scope="module")
def main_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("main")
    flags = ["--api-key", KEY, "--allowed-origins", "https://good.example", "--allowed-methods", "GET", "POST",
             "--allow-credentials", "--root-path", "/proxy",
             "--middleware", f"{MW}.AddHeaderMiddleware", "--middleware", f"{MW}.add_header",
             "--served-model-name", *NAMES, "--max-log-len", str(MAX_LOG_LEN),
             "--trace-log-directory", str(tmp / "traces"), "--enable-prefix-caching"]
    with LiveServer(flags, tmp, env={"DYNO_API_KEY": "", "VLLM_API_KEY": ""}) as server:
        server.trace_dir = tmp / "traces"
        yield server


@pytest.fixture
def api(main_server):
    with main_server.client(headers=AUTH) as client:
        yield client


def complete(client: httpx.Client, prompt, max_tokens: int = 4, headers: dict | None = None,
             **extra) -> httpx.Response:
    body = {"model": NAMES[0], "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, **extra}
    return client.post("/v1/completions", json=body, headers=headers)


def scrape(client: httpx.Client) -> dict[str, float]:
    """{'name{label=value,...}': value} of every sample, labels sorted, model_name left out."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "model_name")
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


# -- --api-key -------------------------------------------------------------------------------


def test_api_key_required_on_v1(main_server):
    with main_server.client() as anonymous:
        for r in (anonymous.get("/v1/models"), complete(anonymous, "hi"),
                  anonymous.get("/v1/models", headers={"Authorization": "Bearer wrong"})):
            assert_openai_error(r, 401)
        assert anonymous.get("/health").status_code == 200  # outside /v1: open
        assert anonymous.get("/metrics").status_code == 200


def test_api_key_with_the_openai_client(main_server):
    wrong = openai.OpenAI(base_url=main_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=main_server.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in right.models.list()] == NAMES
    out = right.completions.create(model=NAMES[1], prompt="The sky is", max_tokens=3, temperature=0)
    assert out.usage.completion_tokens == 3


# -- CORS ------------------------------------------------------------------------------------


def test_cors_preflight(main_server):
    with main_server.client() as browser:
        ok = browser.options("/v1/chat/completions", headers={
            "Origin": "https://good.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://good.example"
        assert ok.headers["access-control-allow-credentials"] == "true"
        assert set(ok.headers["access-control-allow-methods"].replace(" ", "").split(",")) == {"GET", "POST"}
        for origin, method in (("https://evil.example", "POST"), ("https://good.example", "DELETE")):
            denied = browser.options("/v1/chat/completions", headers={
                "Origin": origin, "Access-Control-Request-Method": method})
            assert denied.status_code == 400
        # A real request from the allowed origin: readable by the page, request id exposed.
        r = browser.get("/v1/models", headers={"Origin": "https://good.example", **AUTH})
        assert r.headers["access-control-allow-origin"] == "https://good.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


# -- request ids, --middleware ---------------------------------------------------------------


def test_request_id_and_user_middlewares(main_server, api):
    r = complete(api, "Once upon a time", headers={"X-Request-Id": "client-trace-7"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "client-trace-7"
    assert r.headers["x-test-class"] == "yes"                 # the ASGI class
    assert r.headers["x-test-function"] == "client-trace-7"   # the function sees the request id
    generated = api.get("/v1/models")
    assert re.fullmatch(r"req-[0-9a-f]{32}", generated.headers["x-request-id"])
    assert generated.headers["x-test-function"] == generated.headers["x-request-id"]
    assert any("Received request client-trace-7" in line for line in main_server.log_lines())


def test_rejected_requests_pass_the_user_middleware_too(main_server):
    with main_server.client() as anonymous:
        r = anonymous.get("/v1/models")
        assert r.status_code == 401 and r.headers["x-test-class"] == "yes" and r.headers["x-request-id"]


# -- --root-path -----------------------------------------------------------------------------


def test_root_path(main_server, api):
    # Behind a proxy that keeps the prefix, and one that strips it: both reach the routes.
    assert api.get("/proxy/v1/models").json()["data"][0]["id"] == NAMES[0]
    assert api.get("/v1/models").status_code == 200
    # Links the API hands out carry the prefix.
    schema = api.get("/openapi.json").json()
    assert schema["servers"] == [{"url": "/proxy"}]
    assert "/proxy/openapi.json" in api.get("/docs").text


# -- --served-model-name ---------------------------------------------------------------------


def test_served_model_names(api):
    models = api.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == NAMES
    assert all(m["max_model_len"] == 512 and m["root"] for m in models)
    for name in NAMES:
        assert complete(api, "Hello", model=name).status_code == 200
    error = assert_openai_error(complete(api, "Hello", model="gpt-4"), 404)
    assert "gpt-4" in error["message"]
    chat = api.post("/v1/chat/completions", json={"model": "SmolLM2-135M-Instruct", "max_tokens": 2,
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(chat, 404)  # the model's own name is not served when names are given


# -- --max-log-len ---------------------------------------------------------------------------


def test_max_log_len_cuts_logged_prompts(main_server, api):
    prompt = "ABCDEFGHIJKLmnopqrstuvwxyz and more"
    assert complete(api, prompt, headers={"X-Request-Id": "loglen-text"}).status_code == 200
    ids = list(range(100, 130))
    assert complete(api, ids, headers={"X-Request-Id": "loglen-ids"}).status_code == 200
    lines = main_server.log_lines()
    text_line = next(line for line in lines if "Received request loglen-text" in line)
    assert "'ABCDEFGHIJKL'" in text_line and "ABCDEFGHIJKLm" not in text_line
    ids_line = next(line for line in lines if "Received request loglen-ids" in line)
    assert str(ids[:MAX_LOG_LEN]) in ids_line and str(ids[MAX_LOG_LEN]) not in ids_line
    assert any("Finished request loglen-text" in line for line in lines)


# -- --trace-log-directory -------------------------------------------------------------------


def test_trace_log(main_server, api):
    r = complete(api, "Tell me a story", max_tokens=5, headers={"X-Request-Id": "traced-1"})
    assert r.status_code == 200
    usage = r.json()["usage"]

    def entry():
        for path in main_server.trace_dir.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["request_id"] == "traced-1":
                    return record
        return None

    record = wait_for(entry)
    assert record is not None, list(main_server.trace_dir.iterdir())
    assert set(record) == {"request_id", "arrival_time", "scheduled_time", "first_token_time", "finished_time",
                           "queue_s", "ttft_s", "e2e_s", "num_prompt_tokens", "num_output_tokens", "finish_reason"}
    assert record["arrival_time"] <= record["scheduled_time"] <= record["first_token_time"] <= record["finished_time"]
    assert abs(record["arrival_time"] - time.time()) < 120  # Unix time
    assert record["num_prompt_tokens"] == usage["prompt_tokens"]
    assert record["num_output_tokens"] == usage["completion_tokens"] == 5
    assert record["finish_reason"] == "length"


# -- /metrics --------------------------------------------------------------------------------


def test_metrics_count_requests(api):
    before = scrape(api)
    usages = [complete(api, f"Count to {i}:", max_tokens=3 + i).json()["usage"] for i in range(3)]
    with api.stream("POST", "/v1/completions", json={
            "model": NAMES[0], "prompt": "Stream this", "max_tokens": 4, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}) as stream:
        chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    usages.append(chunks[-1]["usage"])
    after = scrape(api)

    def delta(name):
        return after[name] - before.get(name, 0)

    assert delta("vllm:prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    assert delta("vllm:generation_tokens_total") == sum(u["completion_tokens"] for u in usages) == 3 + 4 + 5 + 4
    assert delta("vllm:request_success_total{finished_reason=length}") == 4
    assert delta("vllm:time_to_first_token_seconds_count") == 4
    assert delta("vllm:e2e_request_latency_seconds_count") == 4
    assert delta("vllm:e2e_request_latency_seconds_sum") > 0
    assert delta("vllm:request_queue_time_seconds_count") == 4
    assert delta("vllm:request_prompt_tokens_sum") == sum(u["prompt_tokens"] for u in usages)
    assert delta("vllm:request_generation_tokens_sum") == 16
    # Tokens after the first arrive as gaps; the sum of gaps is positive.
    assert delta("vllm:inter_token_latency_seconds_count") == 16 - 4
    assert delta("vllm:time_per_output_token_seconds_count") == 16 - 4
    assert after["vllm:num_requests_running"] == after["vllm:num_requests_waiting"] == 0
    assert 0 <= after["vllm:kv_cache_usage_perc"] == after["vllm:gpu_cache_usage_perc"] <= 1
    for name in ("vllm:num_preemptions_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                 "vllm:gpu_prefix_cache_queries_total", "vllm:gpu_prefix_cache_hits_total"):
        assert name in after
    assert "model_name=\"dyno-a\"" in api.get("/metrics").text  # labelled with the first served name
    # vLLM's buckets: token counts 1-2-5 up to --max-model-len, latencies as vLLM has them
    buckets = {k for k in after if k.startswith("vllm:request_prompt_tokens_bucket")}
    assert {float(k.split("le=")[1].rstrip("}")) for k in buckets} == {1, 2, 5, 10, 20, 50, 100, 200, 500, float("inf")}
    assert "vllm:time_to_first_token_seconds_bucket{le=2560.0}" in after


def test_metrics_prefix_cache_hits(api):
    prompt = "A long shared system prompt that fills more than one block of sixteen tokens. " * 3
    assert complete(api, prompt + "First.").status_code == 200
    before = scrape(api)
    assert complete(api, prompt + "Second.").status_code == 200
    after = scrape(api)
    assert after["vllm:prefix_cache_queries_total"] > before["vllm:prefix_cache_queries_total"]
    assert after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"] >= 16
    assert after["vllm:gpu_prefix_cache_hits_total"] == after["vllm:prefix_cache_hits_total"]


def test_client_disconnect_returns_kv_blocks(main_server, api):
    idle = scrape(api)["dyno:kv_cache_free_blocks"]
    with main_server.client(headers=AUTH) as client:
        with client.stream("POST", "/v1/completions", json={
                "model": NAMES[0], "prompt": "Go on and on", "max_tokens": 400, "temperature": 0,
                "ignore_eos": True, "stream": True}) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: {"):
                    break
            busy = scrape(api)
            assert busy["vllm:num_requests_running"] == 1 and busy["dyno:kv_cache_free_blocks"] < idle
    # the connection is closed mid-stream: the request is aborted and its blocks come back
    back = wait_for(lambda: (s := scrape(api))["vllm:num_requests_running"] == 0
                    and s["dyno:kv_cache_free_blocks"] == idle, timeout=30)
    assert back, scrape(api)


# -- --uvicorn-log-level (default info) ------------------------------------------------------


def test_uvicorn_info_logs_access_lines(main_server, api):
    api.get("/health", headers={"X-Request-Id": "x"})
    assert wait_for(lambda: any("uvicorn.access" in line and "GET /health" in line
                                for line in main_server.log_lines()))


# -- TLS, the key from the environment, JSON logs, no request logs, quiet uvicorn ------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    certs = make_certs(tmp / "certs")
    flags = ["--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key),
             "--ssl-ca-certs", str(certs.ca), "--ssl-cert-reqs", "required",
             "--log-format", "json", "--disable-log-requests", "--uvicorn-log-level", "warning"]
    env = {"DYNO_API_KEY": "", "VLLM_API_KEY": "env-key"}
    with LiveServer(flags, tmp, env=env, verify=certs.client_context(certs.client_cert)) as server:
        server.certs = certs
        yield server


def test_mutual_tls(tls_server):
    certs = tls_server.certs
    with httpx.Client(verify=certs.client_context(certs.client_cert), timeout=30) as good:
        assert good.get(tls_server.url + "/health").status_code == 200
    for cert in (None, certs.stranger_cert):  # no client certificate, or one from another CA
        with httpx.Client(verify=certs.client_context(cert), timeout=30) as bad:
            with pytest.raises(httpx.TransportError):
                bad.get(tls_server.url + "/health")
    with httpx.Client(timeout=30) as plain:  # plain HTTP on the TLS port
        with pytest.raises(httpx.TransportError):
            plain.get(tls_server.url.replace("https", "http") + "/health")


def test_openai_client_over_mutual_tls_with_env_key(tls_server):
    certs = tls_server.certs
    http = httpx.Client(verify=certs.client_context(certs.client_cert), timeout=60)
    client = openai.OpenAI(base_url=tls_server.url + "/v1", api_key="env-key", http_client=http, max_retries=0)
    out = client.chat.completions.create(model="SmolLM2-135M-Instruct", max_tokens=3, temperature=0,
                                         messages=[{"role": "user", "content": "Hi"}])
    assert out.usage.completion_tokens <= 3
    wrong = openai.OpenAI(base_url=tls_server.url + "/v1", api_key="nope", http_client=http, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_json_logs_quiet_uvicorn_no_request_logs(tls_server):
    with tls_server.client() as client:
        assert client.post("/v1/completions", headers={"Authorization": "Bearer env-key"},
                           json={"prompt": "hello", "max_tokens": 2}).status_code == 200
    records = [json.loads(line) for line in tls_server.log_lines() if line.strip()]  # each line is JSON
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    loggers = {r["logger"] for r in records}
    assert "engine.setup" in loggers                        # the engine still logs at info
    assert "engine.server.requests" not in loggers          # --disable-log-requests
    assert not any(r["logger"].startswith("uvicorn") and r["level"] == "info" for r in records)  # warning


# -- SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_with_a_stream_in_flight(tmp_path):
    server = LiveServer([], tmp_path).start()
    got_first = threading.Event()
    outcome = {}

    def stream():
        try:
            with server.client(timeout=60) as client:
                with client.stream("POST", "/v1/completions", json={
                        "prompt": "Write a very long essay", "max_tokens": 40, "ignore_eos": True,
                        "stream": True}) as r:
                    lines = []
                    for line in r.iter_lines():
                        lines.append(line)
                        got_first.set()
                    outcome["lines"] = lines
        except httpx.HTTPError as e:  # cut off at the end of the grace period
            outcome["error"] = e
        finally:
            got_first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert got_first.wait(60)
    start = time.monotonic()
    server.terminate()
    try:
        assert server.proc.wait(40) == 0, server.log()[-2000:]
    finally:
        server.stop()
    assert time.monotonic() - start < 40
    reader.join(10)
    assert not reader.is_alive()
    # In flight at SIGTERM: finished within the grace period, or cut at its end.
    assert outcome.get("error") or [line for line in outcome["lines"] if line][-1] == "data: [DONE]", outcome
    with pytest.raises(httpx.TransportError):  # nothing listens any more
        httpx.get(server.url + "/health", timeout=2)


# -- schemathesis over the live server's OpenAPI schema --------------------------------------

# Generation is bounded so each example costs a few tokens, not a context's worth.
FUZZ_LIMITS = {"n": 2, "best_of": 2, "max_tokens": 8, "min_tokens": 8, "logprobs": 5, "top_logprobs": 5}
FUZZ_EXAMPLES = 20


def _tame(case) -> None:
    if not isinstance(case.body, dict):
        return
    for key, high in FUZZ_LIMITS.items():
        value = case.body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > high:
            case.body[key] = high
    if case.body.get("max_tokens") is None and case.operation.path.endswith("completions"):
        case.body["max_tokens"] = 8


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_openapi_no_server_errors(main_server, api, mode):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_dict(api.get("/openapi.json").json())
    failures, tried = [], {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        def run(case):
            _tame(case)
            tried[operation.label] = tried.get(operation.label, 0) + 1
            try:
                r = case.call(base_url=main_server.url, headers=AUTH, timeout=60)
            except Exception as e:  # noqa: BLE001 - a dropped connection is a failure too
                failures.append((operation.label, type(e).__name__, case.body))
                return
            if r.status_code >= 500:
                failures.append((operation.label, r.status_code, r.text[:300], case.body))

        try:
            run()
        except Unsatisfiable:  # no invalid input exists for an operation without parameters
            assert mode == "negative"
    assert tried.get("POST /v1/completions", 0) >= FUZZ_EXAMPLES // 2
    assert tried.get("POST /v1/chat/completions", 0) >= FUZZ_EXAMPLES // 2
    assert not failures, failures[:5]
    assert api.get("/health").status_code == 200


def test_engine_threads_are_bound_one_per_core(main_server):
    """`dyno serve` keeps each OpenMP thread on its own core unless the user placed them
    (dyno/cli.py): the server's threads include one pinned to each of at least two cores."""
    import os
    from pathlib import Path

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU here: no cores to spread the threads over")
    pinned = set()
    for status in Path(f"/proc/{main_server.proc.pid}/task").glob("*/status"):
        allowed = next(line.split()[1] for line in status.read_text().splitlines()
                       if line.startswith("Cpus_allowed_list"))
        if allowed.isdigit():
            pinned.add(int(allowed))
    assert len(pinned) >= 2, pinned


# -- flag mistakes stop start-up with one line, before the model loads -----------------------


@pytest.mark.parametrize("flags, message", [
    (["--middleware", "no_such_module_xyz.Thing"],
     "--middleware no_such_module_xyz.Thing: cannot import module 'no_such_module_xyz'"),
    (["--middleware", f"{MW}.NOT_MIDDLEWARE"], f"--middleware {MW}.NOT_MIDDLEWARE: not an ASGI middleware"),
    (["--ssl-keyfile", "/no/such.key"], "--ssl-keyfile /no/such.key: no such file"),
    (["--ssl-cert-reqs", "required"], "--ssl-cert-reqs is for TLS"),
])
def test_bad_server_flags_exit_2_with_one_line(flags, message):
    import subprocess
    import sys

    from .live import ROOT
    proc = subprocess.run([sys.executable, "-m", "dyno", "serve", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"dyno serve: error: {message}"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "loaded" not in proc.stderr
