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


def demo_session(results_dir: Path, seconds: int = 120) -> "Session":
    """A deterministic session for snapshots: three servers (ready, failed, unreachable),
    two minutes of scrapes ending at FROZEN_T with a TTFT that turns slow half-way (a breach
    of ttft_p99=500ms), client requests alongside, and the events that go with them."""
    from loadgen.scrape import parse_metrics
    from tui import promhist
    from tui.session import ServerHandle, Session
    from tui.slo import SloSet

    session = Session(results_dir, SloSet.from_texts(["ttft_p99=500ms", "itl_p99=50ms"]))
    start = FROZEN_T - seconds
    ready = ServerHandle("s1", "dyno:8123", "http://127.0.0.1:8123", model="SmolLM2-135M (default)",
                         state="ready", launched=True, flags={"max_num_seqs": 8, "port": 8123},
                         started_at=start - 65)
    ready.log.extend(["INFO loading SmolLM2-135M-Instruct", "INFO KV cache: 2048 blocks of 16",
                      "INFO Uvicorn running on http://127.0.0.1:8123"])
    dead = ServerHandle("s2", "dyno:8124", "http://127.0.0.1:8124", model="SmolLM2-135M (default)",
                        state="failed", launched=True, started_at=start)
    dead.log.extend(["INFO loading SmolLM2-135M-Instruct", "ERROR --max-model-len 99999 is larger "
                     "than the model's 8192", "exited with code 2"])
    gone = ServerHandle("s3", "10.0.0.7:8000", "http://10.0.0.7:8000", model="llama", state="unreachable",
                        started_at=start)
    session.servers += [ready, dead, gone]
    session.selected = ready
    session.events.add("launch", "launching dyno:8123", "s1", at=start - 65)
    session.events.add("failed", "dyno:8124 exited with code 2: ERROR --max-model-len 99999", "s2",
                       at=start + 3)
    session.events.add("scrape_failed", "10.0.0.7:8000: /metrics connection refused", "s3", at=start + 5)
    fast = slow = 0
    for i in range(seconds + 1):
        t = start + i
        running = 4 + (i % 5)
        if i < seconds // 2:
            fast += 6
        else:
            slow += 6
        text = metrics_text(40 * i + (i * i) // 4, {0.1: fast, 1.0: slow}, running=running,
                            waiting=i % 3, usage=0.2 + 0.3 * i / seconds, free=1600 - 4 * i,
                            hits=20 * i, queries=50 * i, prompt_tokens=100 * i)
        session.record("metrics", {"server_id": "s1", "values": parse_metrics(text),
                                   "hists": promhist.parse_histograms(text)}, t=t)
        ttft = 0.08 if i < seconds // 2 else 0.7
        session.record("request", {"request_id": f"r{i}", "point": "concurrency=4", "index": i,
                                   "is_warmup": False, "scheduled_time": t - ttft - 0.1,
                                   "dispatch_time": t - ttft - 0.1 + 0.002 * (i % 4),
                                   "send_time": t - ttft - 0.09, "first_token_time": t - 0.09,
                                   "end_time": t, "chunk_times": [t - 0.09, t - 0.06, t - 0.03, t],
                                   "chunk_tokens": [1, 1, 1, 1], "output_tokens": 4,
                                   "run_id": "b1"}, t=t)
    return session
