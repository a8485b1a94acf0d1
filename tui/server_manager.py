"""Server processes: start a `dyno serve` subprocess, keep its log tail, wait for /health,
notice when it dies, stop it. Everything here blocks, so the session runs it in a thread
worker; state changes go back through the session (which records them and tells the UI)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tuner.engines import DynoEngine

if TYPE_CHECKING:
    from tui.session import ServerHandle, Session

READY_POLL_S = 0.5
STOP_GRACE_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_command(flags: dict, host: str, port: int) -> list[str]:
    """`python -m dyno serve --host H --port P ...` for the flags that differ from defaults."""
    rest = {k: v for k, v in flags.items() if k not in ("host", "port")}
    return DynoEngine().command(rest, host, port)


def start_process(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """The server writes to a file, not a pipe: a server left running after the dashboard
    quits must not die of a closed pipe. Own session: Ctrl-C in our terminal doesn't reach it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)


class LogTail:
    """Reads the lines a log file gained since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, ""

    def read_new(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except OSError:
            return []
        text, self.partial = self.partial + text, ""
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines


def is_healthy(base_url: str, api_key: str | None) -> bool:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return httpx.get(base_url + "/health", headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def supervise(session: Session, handle: ServerHandle, proc: subprocess.Popen,
              tail: LogTail) -> None:
    """Blocking: starting -> ready when /health answers; -> failed if the process exits on
    its own. Returns when the process is gone, is replaced (restart) or the session closes."""
    while proc.poll() is None and handle.proc is proc and not session.is_closed:
        handle.log.extend(tail.read_new())
        if handle.state == "starting" and is_healthy(handle.base_url, handle.api_key):
            session.set_state(handle, "ready", f"{handle.name} ready in "
                                               f"{time.time() - handle.started_at:.1f}s")
        time.sleep(READY_POLL_S)
    handle.log.extend(tail.read_new())
    if proc.poll() is not None and handle.state in ("starting", "ready") and handle.proc is proc:
        last = " | ".join(list(handle.log)[-3:]) or "no output"
        session.set_state(handle, "failed",
                          f"{handle.name} exited with code {proc.returncode}: {last}")


def stop_process(proc: subprocess.Popen | None) -> None:
    """Terminate, wait, then kill: blocking, run it in a worker."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5.0)
