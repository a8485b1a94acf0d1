"""The real `dyno serve` process, driven by the official openai client and by httpx."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from engine import SamplingParams

MAX_MODEL_LEN = 512
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2+2?"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "stderr.log", "w+")  # a pipe nobody reads would fill and block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "dyno", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--gpu-memory-utilization", "0.2",
         "--served-model-name", "smol", "other-name"],
        stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"dyno serve exited: {log.read()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused")


def _greedy(default_llm, prompt, **kw):
    return default_llm.generate(prompt, SamplingParams(temperature=0, **kw))[0].outputs[0]


def test_completion_equals_the_offline_engine(client, default_llm):
    resp = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=12,
                                     temperature=0)
    expected = _greedy(default_llm, "The capital of France is", max_tokens=12)
    assert resp.choices[0].text == expected.text
    assert resp.choices[0].finish_reason == "length"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (5, 12)


def test_chat_equals_the_offline_engine_streamed_or_not(client, default_llm):
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    expected = default_llm.chat(messages, SamplingParams(temperature=0, max_tokens=30))[0].outputs[0]
    resp = client.chat.completions.create(model="smol", messages=messages, max_tokens=30, temperature=0)
    assert resp.choices[0].message.content == expected.text == "The capital of France is Paris."
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="smol", messages=messages, max_tokens=30,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_sixty_four_concurrent_streams(server, default_llm):
    prompts = [f"Count from {i} to {i + 5}:" for i in range(64)]
    expected = [o.outputs[0].text for o in default_llm.generate(
        prompts, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))]

    async def one(aclient, prompt):
        stream = await aclient.completions.create(model="smol", prompt=prompt, max_tokens=8, temperature=0,
                                                  stream=True, extra_body={"ignore_eos": True})
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def run():
        aclient = openai.AsyncOpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
        return await asyncio.gather(*(one(aclient, p) for p in prompts))

    assert asyncio.run(run()) == expected


def test_logprobs_n_stop_echo_and_seed(client, default_llm):
    resp = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=3,
                                     temperature=0, logprobs=2, echo=True)
    choice = resp.choices[0]
    assert choice.text.startswith("The capital of France is")
    assert choice.logprobs.token_logprobs[0] is None and len(choice.logprobs.tokens) == 5 + 3
    assert all(len(t) >= 2 for t in choice.logprobs.top_logprobs[5:])
    chat = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": QUESTIONS[1]}],
                                          max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    entry = chat.choices[0].logprobs.content[0]
    assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == entry.logprob
    seeded = [client.completions.create(model="smol", prompt="Once upon a time", max_tokens=10, n=2,
                                        temperature=1.0, seed=11) for _ in range(2)]
    assert [c.text for c in seeded[0].choices] == [c.text for c in seeded[1].choices]
    assert [c.index for c in seeded[0].choices] == [0, 1]
    full = _greedy(default_llm, "The capital of France is", max_tokens=12).text
    word = full.split()[1]
    stopped = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=12,
                                        temperature=0, stop=[word])
    assert stopped.choices[0].text == full[:full.index(word)]
    assert stopped.choices[0].finish_reason == "stop"


def test_models_tokenize_detokenize_health_version(server):
    models = httpx.get(server + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["smol", "other-name"]
    assert models["data"][0]["max_model_len"] == MAX_MODEL_LEN and models["data"][0]["root"]
    tokens = httpx.post(server + "/tokenize", json={"prompt": "Hello world"}).json()
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == MAX_MODEL_LEN
    assert httpx.post(server + "/detokenize", json={"tokens": tokens["tokens"]}).json() == {"prompt": "Hello world"}
    assert httpx.get(server + "/health").status_code == 200
    assert httpx.get(server + "/version").json()["version"]
    assert httpx.post(server + "/reset_prefix_cache").status_code == 200
    assert httpx.get(server + "/openapi.json").json()["paths"]["/v1/chat/completions"]


@pytest.mark.parametrize("body, status, message", [
    ({"prompt": "hi", "temperature": -1}, 400, "temperature must be >= 0"),
    ({"prompt": "hi", "max_tokens": MAX_MODEL_LEN}, 400,
     f"maximum context length is {MAX_MODEL_LEN} tokens. However, you requested {MAX_MODEL_LEN + 1} "
     f"tokens (1 in the prompt, {MAX_MODEL_LEN} in the completion)"),
    ({"prompt": "hi", "model": "nope"}, 404, "The model `nope` does not exist"),
    ({"max_tokens": 3}, 400, "prompt"),
    ({"prompt": "hi", "logprobs": 50}, 400, "logprobs must be between 0 and 20"),
    ({"prompt": [1, 99999999]}, 400, "outside the vocabulary"),
    ({"prompt": "hi", "n": 100000}, 400, "n must be at most 128"),
])
def test_bad_requests_get_openai_errors(server, body, status, message):
    resp = httpx.post(server + "/v1/completions", json=body)
    assert resp.status_code == status
    assert message in resp.json()["error"]["message"]


def test_malformed_json_is_a_400(server):
    resp = httpx.post(server + "/v1/chat/completions", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "error" in resp.json()


def test_request_id_header_is_echoed(server):
    resp = httpx.post(server + "/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                      headers={"X-Request-Id": "client-42"})
    assert resp.headers["x-request-id"] == "client-42"


def _metric(server, name: str) -> float:
    for line in httpx.get(server + "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_client_that_hangs_up_frees_its_blocks(server):
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", server + "/v1/completions",
                         json={"prompt": "Tell me a long story.", "max_tokens": 400, "stream": True,
                               "ignore_eos": True}) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    break
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _metric(server, "vllm:num_requests_running") == 0 and _metric(server, "vllm:kv_cache_usage_perc") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the abandoned request still holds the engine")
