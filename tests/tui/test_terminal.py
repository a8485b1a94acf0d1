"""`dyno tui` in a real terminal: tmux runs it at 120x40, keys go in with send-keys, and the
checks read what a person would see (capture-pane)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server of our own (its own socket), so nothing else on the machine is touched."""

    def __init__(self) -> None:
        self.socket = f"dyno-tui-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                             timeout=10)
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "tui")

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        """The first capture that shows every one of `texts` (a capture can catch a frame
        half drawn, so what belongs together is checked together)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts!r} never appeared; the screen was:\n{self.screen()}")

    def alive(self) -> bool:
        return "tui" in self.run("list-sessions", "-F", "#{session_name}")


def test_dyno_tui_in_tmux(tmp_path, mock_server):
    tmux = Tmux()
    # pytest's environment says COLUMNS=80 LINES=24 to children; the pane's own size must win
    cmd = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", sys.executable, "-m", "dyno", "tui", "--results-dir", str(tmp_path),
                      "--attach", mock_server.base_url, "--slo", "ttft_p99=500ms"])
    tmux.run("new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", cmd)
    try:
        # the attached mock server in the table, the SLO verdict line above it
        tmux.wait_for(f"{mock_server.base_url[7:]}  ready", "mock", "attached", "ttft_p99 — ≤ 500ms")
        tmux.run("send-keys", "-t", "tui", "2")
        tmux.wait_for("[READY]", "gen tok/s", "client TTFT p50", "sched lag")
        tmux.wait_for("0.0 tok/s")                           # two scrapes: a rate
        tmux.run("send-keys", "-t", "tui", "F1")
        tmux.wait_for("command palette")
        tmux.wait_for("F2 … F7")
        tmux.run("send-keys", "-t", "tui", "F2", "q")        # nothing launched: quits at once
        deadline = time.monotonic() + 15
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not tmux.alive()
        recordings = list((tmp_path / "tui-sessions").glob("session-*.jsonl"))
        assert len(recordings) == 1 and '"kind": "metrics"' in recordings[0].read_text()
    finally:
        tmux.run("kill-server")
