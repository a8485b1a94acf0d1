"""Runs the mock server as its own process (a real HTTP server, as any target would be)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from loadgen.mock_server import MockPacing


class MockServer:
    """`with MockServer(MockPacing(ttft_ms=50)) as mock: ... mock.base_url ...`"""

    def __init__(self, pacing: MockPacing | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pacing = pacing or MockPacing()
        self.host = host
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> MockServer:
        entry = "import sys; from loadgen.mock_server import serve; serve(sys.argv[1:])"
        cmd = [sys.executable, "-c", entry, "--host", self.host, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd + self.pacing.to_args(), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"mock server did not start: {line.strip() or 'no output'}")
        self.port = int(line.rsplit(":", 1)[1])
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mock server at {self.base_url} not ready after {timeout_s:g}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
