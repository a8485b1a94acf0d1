"""Shared pieces of the dashboard's tests: a mock OpenAI server, a fake `dyno serve` (the
mock server launched through the session, so launch/stop/restart run fast), canned /metrics
text, and a helper that waits on the Pilot until a condition holds."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import pytest

from loadgen import BenchConfig, DatasetConfig, LoadPoint, MockPacing, MockServer, RequestDone, run_bench
from tui import server_manager

FROZEN_T = 1_800_000_000.0  # a fixed "now" for snapshots


async def wait_until(pilot, cond, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(0.1)


@pytest.fixture(scope="session")
def mock_server():
    with MockServer(MockPacing(ttft_ms=40, itl_ms=5, output_len=8)) as mock:
        yield mock


@pytest.fixture
def fake_serve(monkeypatch):
    """session.launch starts loadgen's mock server instead of a real `dyno serve`; the flag
    "fail" makes it a process that prints a few lines and exits 3."""

    def command(flags: dict, host: str, port) -> list[str]:
        if flags.get("fail"):
            code = "print('loading model'); print('error: out of blocks'); raise SystemExit(3)"
            return [sys.executable, "-c", code]
        entry = "import sys; from loadgen.mock_server import serve; serve(sys.argv[1:])"
        return [sys.executable, "-c", entry, "--host", str(host), "--port", str(port),
                *MockPacing(ttft_ms=20, itl_ms=2, output_len=4).to_args()]

    monkeypatch.setattr(server_manager, "serve_command", command)
    monkeypatch.setattr(server_manager, "READY_POLL_S", 0.1)


def drive_load(base_url: str, session, num_prompts: int = 24, concurrency: int = 4,
               server_id: str | None = None, output_len: int = 8) -> threading.Thread:
    """A loadgen run in a thread, each finished request recorded like the Bench screen does."""

    def on_event(event) -> None:
        if isinstance(event, RequestDone):
            payload = dataclasses.asdict(event.record) | {"run_id": "test"}
            if server_id:
                payload["server_id"] = server_id
            session.record("request", payload)

    config = BenchConfig(base_url=base_url, points=(LoadPoint(concurrency=concurrency),),
                         num_prompts=num_prompts, dataset=DatasetConfig(input_len="16", output_len=str(output_len)),
                         scrape_interval_s=None)
    thread = threading.Thread(target=run_bench, args=(config, on_event), daemon=True)
    thread.start()
    return thread


def metrics_text(gen_tokens: float, ttft_buckets: dict[float, int], *, running: int = 2,
                 waiting: int = 1, usage: float = 0.25, free: int = 300, hits: float = 0,
                 queries: float = 0, prompt_tokens: float = 0) -> str:
    """A /metrics page shaped like dyno's (vLLM names), with a cumulative TTFT histogram."""
    lines = [
        "# TYPE vllm:num_requests_running gauge", f'vllm:num_requests_running{{model_name="m"}} {running}',
        "# TYPE vllm:num_requests_waiting gauge", f'vllm:num_requests_waiting{{model_name="m"}} {waiting}',
        "# TYPE vllm:kv_cache_usage_perc gauge", f'vllm:kv_cache_usage_perc{{model_name="m"}} {usage}',
        "# TYPE dyno:kv_cache_free_blocks gauge", f'dyno:kv_cache_free_blocks{{model_name="m"}} {free}',
        "# TYPE vllm:generation_tokens_total counter", f'vllm:generation_tokens_total{{model_name="m"}} {gen_tokens}',
        "# TYPE vllm:prompt_tokens_total counter", f'vllm:prompt_tokens_total{{model_name="m"}} {prompt_tokens}',
        "# TYPE vllm:prefix_cache_hits_total counter", f'vllm:prefix_cache_hits_total{{model_name="m"}} {hits}',
        "# TYPE vllm:prefix_cache_queries_total counter", f'vllm:prefix_cache_queries_total{{model_name="m"}} {queries}',
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    total = 0
    for le, n in sorted(ttft_buckets.items()):
        total += n
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="{le}",model_name="m"}} {total}')
    lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="+Inf",model_name="m"}} {total}')
    lines.append(f'vllm:time_to_first_token_seconds_count{{model_name="m"}} {total}')
    lines.append(f'vllm:time_to_first_token_seconds_sum{{model_name="m"}} 0.0')
    return "\n".join(lines) + "\n"


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return tmp_path / "results"
