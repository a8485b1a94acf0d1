"""A trial's server process, with stand-in servers (no model): every way it can go wrong becomes a
TrialFailed with a reason and the log tail, and no process is left behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from loadgen import BenchConfig, DatasetConfig, LoadPoint
from tuner.engines import Engine
from tuner.trial import TrialConfig, TrialFailed, run_trial

# A server that answers /health and streams one completion, then optionally dies.
SERVER = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
if os.environ.get("IGNORE_TERM"): signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stand-in server up", flush=True)
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = json.dumps({"data": [{"id": "m"}]}).encode() if self.path == "/v1/models" else b"{}"
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        if os.environ.get("DIE_ON_LOAD"):
            print("Killed: out of memory", flush=True); os._exit(137)
        self.send_response(500); self.end_headers()
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class Script(Engine):
    name = "script"

    def __init__(self, code: str) -> None:
        self.code = code

    def command(self, flags, host, port):
        return [sys.executable, "-c", self.code, str(port)]


def trial(tmp_path: Path, code: str, timeout: float = 20.0) -> TrialConfig:
    bench = BenchConfig(dataset=DatasetConfig(input_len="fixed:4", output_len="fixed:4"),
                        points=(LoadPoint(concurrency=1),), num_prompts=2, scrape_interval_s=None,
                        request_timeout_s=5)
    return TrialConfig({}, bench, tmp_path, Script(code), startup_timeout_s=timeout, stop_timeout_s=1.0)


def alive(tag: Path) -> bool:
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"DYNO_TUNE_TRIAL={tag}".encode() in env.read_bytes():
                return True
        except OSError:
            pass
    return False


def test_exit_at_startup_gives_the_code_and_the_last_log_line(tmp_path):
    with pytest.raises(TrialFailed) as e:
        run_trial(trial(tmp_path, "print('dyno serve: error: bad flag'); raise SystemExit(2)"))
    assert e.value.reason == "server exited with code 2 before it was ready (dyno serve: error: bad flag)"
    assert "bad flag" in e.value.log_tail


def test_startup_timeout_kills_the_server(tmp_path):
    start = time.monotonic()
    with pytest.raises(TrialFailed, match=r"server not healthy after 1\.5s \(startup timeout\)"):
        run_trial(trial(tmp_path, "import time; print('loading', flush=True); time.sleep(60)", timeout=1.5))
    assert time.monotonic() - start < 10
    assert not alive(tmp_path)


def test_sigterm_ignored_means_sigkill_and_no_process_left(tmp_path, monkeypatch):
    monkeypatch.setenv("IGNORE_TERM", "1")
    with pytest.raises(TrialFailed, match="no request succeeded"):  # the stand-in answers 500
        run_trial(trial(tmp_path, SERVER))
    assert not alive(tmp_path)


def test_death_under_load_is_out_of_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("DIE_ON_LOAD", "1")
    with pytest.raises(TrialFailed) as e:
        run_trial(trial(tmp_path, SERVER))
    assert e.value.reason.startswith("server died under load with code 137 (out of memory)")
    assert "Killed: out of memory" in e.value.log_tail
    assert not alive(tmp_path)
