"""A real `dyno serve` process on a free loopback port, for the server's integration tests.

The default model (SmolLM2-135M-Instruct, cached after the first use) with a small context and
KV cache, so a server starts in seconds and several can follow each other in one test run.
stderr goes to a file that tests read for log lines.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
BASE_FLAGS = ["--max-model-len", "512", "--gpu-memory-utilization", "0.2",
              "--num-gpu-blocks-override", "256"]
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, flags: list[str], log_dir: Path, *, env: dict[str, str] | None = None,
                 verify: ssl.SSLContext | None = None, health_path: str = "/health") -> None:
        self.port = free_port()
        scheme = "https" if verify is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify
        self.log_path = log_dir / f"server-{self.port}.log"
        self.cmd = [sys.executable, "-m", "dyno", "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), *BASE_FLAGS, *flags]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.health_path = health_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> LiveServer:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dyno serve exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.client(timeout=2).get(self.health_path).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dyno serve did not answer in {START_TIMEOUT_S}s:\n{self.log()[-3000:]}")

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, verify=self.verify if self.verify else True, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll predicate until it returns something truthy; that value, or the last one at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
