"""The session: plain state shared by every screen, reachable as `self.app.session`.

Contract (other screens code against it; keep it stable):

- `session.servers: list[ServerHandle]`; `ServerHandle` has `id`, `name`, `base_url`
  ("http://127.0.0.1:8000"), `model: str | None`, `state` in {"starting", "ready", "failed",
  "stopped", "unreachable"}, `launched: bool` (this dashboard owns the process),
  `api_key: str | None`, `flags: dict` (launch flags as EngineArgs field names, {} if attached).
- `session.selected` -> the selected ServerHandle or None; `session.select(server_id)`.
- `session.get(server_id)` -> ServerHandle or None.
- `session.events.add(kind, text, server_id=None)`: the event log (tui/events.py); kinds
  include "breach", "recovered", "restart", "scrape_failed", "bench", "trial", "info".
- `session.record(kind, payload)`: appends {"t", "kind", "payload"} to the session recording
  (tui/recording.py) and hands it to subscribers. Bench screens record each finished request
  with kind "request" and payload = dataclasses.asdict(RequestRecord) | {"run_id": ...}
  (optionally "server_id": the target's id; without it the Monitor counts the request for
  whichever server it shows).
  Thread-safe: may be called from any thread (a bench loop, a worker, the UI).
- `session.subscribe(fn) -> unsubscribe`: `fn(kind, payload)` is called for every record,
  synchronously, in the thread that called `record()` (so it must be quick and thread-safe;
  hop to the UI with `app.call_from_thread` / `post_message`). The Monitor uses it to see
  bench requests live; server state changes arrive as kind "server", events as "event",
  scrapes as "metrics".
- `session.results_dir: Path` (bench results, studies; default ./dyno-results, `dyno tui
  --results-dir`), `session.slos` (tui/slo.py SloSet: the declared SLOs and their verdicts).
- `session.launch(flags) -> ServerHandle`: starts `dyno serve` with those flags (EngineArgs
  field names, e.g. {"model": None, "port": 8123, "max_num_seqs": 8}; "host"/"port" pick the
  address, a free port if none) in a worker; returns at once with state "starting".
- `session.attach(url, api_key=None) -> ServerHandle` (state "starting" until the first
  check, then "ready" or "unreachable"), `session.stop(server_id)`, `session.restart(server_id)`.
- `session.telemetry` (tui/telemetry.py): server series and the client log, per server id.
- `session.is_replay`: True when the session plays back a recording (nothing launches then).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tui import server_manager
from tui.events import Event, EventLog
from tui.recording import Record, Recorder
from tui.slo import SloSet
from tui.telemetry import Telemetry

STATES = ("starting", "ready", "failed", "stopped", "unreachable")
LOG_TAIL_LINES = 500

Subscriber = Callable[[str, dict], None]
# How blocking work is started: the app passes one that makes a Textual thread worker.
Spawner = Callable[[Callable[[], None], str], None]


@dataclass(eq=False)
class ServerHandle:
    id: str
    name: str
    base_url: str
    model: str | None = None
    state: str = "starting"
    launched: bool = False
    api_key: str | None = None
    flags: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    proc: Any = field(default=None, repr=False)   # subprocess.Popen when launched

    @property
    def port(self) -> int | None:
        tail = self.base_url.rsplit(":", 1)[-1].split("/")[0]
        return int(tail) if tail.isdigit() else None

    def uptime_s(self, now: float | None = None) -> float:
        return (now or time.time()) - self.started_at

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "base_url": self.base_url, "model": self.model,
                "state": self.state, "launched": self.launched, "flags": self.flags,
                "started_at": self.started_at}


def _thread_spawner(fn: Callable[[], None], name: str) -> None:
    threading.Thread(target=fn, name=name, daemon=True).start()


class Session:
    def __init__(self, results_dir: Path | str = "dyno-results", slos: SloSet | None = None,
                 recording: Path | None = None, spawn: Spawner | None = None,
                 is_replay: bool = False) -> None:
        self.results_dir = Path(results_dir)
        self.slos = slos or SloSet()
        self.servers: list[ServerHandle] = []
        self.selected: ServerHandle | None = None
        self.is_replay = is_replay
        self.spawn: Spawner = spawn or _thread_spawner
        self.events = EventLog(on_add=self._event_added)
        self._subscribers: list[Subscriber] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.recorder = Recorder(recording) if recording is not None else None
        self.is_closed = False  # long-running workers watch this to end with the app
        self.telemetry = Telemetry(self)  # what the Monitor draws, fed by the records

    # -- recording and subscriptions ------------------------------------------------------

    def record(self, kind: str, payload: dict, t: float | None = None) -> None:
        rec = Record(time.time() if t is None else t, kind, payload)
        if self.recorder is not None:
            self.recorder.write(rec)
        for fn in list(self._subscribers):
            fn(kind, dict(payload, t=rec.t) if "t" not in payload else payload)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def _event_added(self, event: Event) -> None:
        self.record("event", event.to_dict(), t=event.time)

    def close(self) -> None:
        self.is_closed = True
        if self.recorder is not None:
            self.recorder.close()

    # -- servers --------------------------------------------------------------------------

    def get(self, server_id: str | None) -> ServerHandle | None:
        return next((s for s in self.servers if s.id == server_id), None)

    def select(self, server_id: str | None) -> ServerHandle | None:
        self.selected = self.get(server_id)
        return self.selected

    def _add(self, handle: ServerHandle) -> ServerHandle:
        with self._lock:
            self.servers.append(handle)
        if self.selected is None:
            self.selected = handle
        self.record("server", handle.to_dict())
        return handle

    def set_state(self, handle: ServerHandle, state: str, text: str = "") -> None:
        """Change a server's state (any thread); records it and logs an event when it matters."""
        if handle.state == state:
            return
        handle.state = state
        self.record("server", handle.to_dict())
        kind = {"ready": "info", "failed": "failed", "stopped": "stop",
                "unreachable": "unreachable"}.get(state)
        if kind and text:
            self.events.add(kind, text, handle.id)

    def launch(self, flags: dict) -> ServerHandle:
        if self.is_replay:
            raise RuntimeError("a replayed session cannot launch servers")
        flags = dict(flags)
        host = flags.get("host") or "127.0.0.1"
        port = int(flags.get("port") or server_manager.free_port(host))
        flags.update(host=host, port=port)
        num = next(self._ids)
        handle = ServerHandle(f"s{num}", f"dyno:{port}", f"http://{host}:{port}",
                              model=flags.get("model") or "SmolLM2-135M (default)",
                              launched=True, api_key=flags.get("api_key"), flags=flags)
        self._add(handle)
        self.events.add("launch", f"launching {handle.name}", handle.id)
        self._start(handle)
        return handle

    def _start(self, handle: ServerHandle) -> None:
        cmd = server_manager.serve_command(handle.flags, *handle.base_url[7:].rsplit(":", 1))
        handle.log.append("$ " + " ".join(cmd))

        log_path = self.results_dir / "tui-logs" / f"{handle.name.replace(':', '-')}.log"
        tail = server_manager.LogTail(log_path)

        def run() -> None:
            try:
                tail.offset = log_path.stat().st_size if log_path.exists() else 0
                proc = server_manager.start_process(cmd, log_path)
            except OSError as e:
                self.set_state(handle, "failed", f"{handle.name} could not start: {e}")
                return
            handle.proc = proc
            if handle.state == "stopped":  # stopped before the process existed
                server_manager.stop_process(proc)
                return
            server_manager.supervise(self, handle, proc, tail)

        self.spawn(run, f"server-{handle.id}")

    def attach(self, url: str, api_key: str | None = None) -> ServerHandle:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        num = next(self._ids)
        name = url.split("://", 1)[1]
        handle = self._add(ServerHandle(f"s{num}", name, url, api_key=api_key))
        self.events.add("attach", f"attached {url}", handle.id)
        self.spawn(lambda: self._check_attached(handle), f"attach-{handle.id}")
        return handle

    def _check_attached(self, handle: ServerHandle) -> None:
        from loadgen.discovery import ServerError, check_server
        try:
            info = check_server(handle.base_url, handle.api_key, timeout_s=3.0)
        except ServerError as e:
            handle.log.append(str(e))
            self.set_state(handle, "unreachable", str(e))
            return
        handle.model = info.models[0] if info.models else None
        self.set_state(handle, "ready", f"{handle.name} answers ({handle.model or 'no model listed'})")

    def stop(self, server_id: str) -> None:
        handle = self.get(server_id)
        if handle is None:
            return
        proc, handle.proc = handle.proc, None
        self.set_state(handle, "stopped", f"stopped {handle.name}")
        if handle.launched:
            self.spawn(lambda: server_manager.stop_process(proc), f"stop-{handle.id}")

    def restart(self, server_id: str) -> None:
        handle = self.get(server_id)
        if handle is None:
            return
        if not handle.launched:  # attached: just check it again
            handle.state = "starting"
            self.events.add("restart", f"rechecking {handle.name}", handle.id)
            self.spawn(lambda: self._check_attached(handle), f"attach-{handle.id}")
            return
        proc, handle.proc = handle.proc, None

        def run() -> None:
            server_manager.stop_process(proc)
            handle.started_at = time.time()
            self.set_state(handle, "starting")
            self._start(handle)

        self.events.add("restart", f"restarting {handle.name}", handle.id)
        self.spawn(run, f"restart-{handle.id}")

    def launched_running(self) -> list[ServerHandle]:
        """Servers this dashboard started that are still up: quitting asks about these."""
        return [s for s in self.servers if s.launched and s.state in ("starting", "ready")]

    def stop_all_launched(self) -> None:
        """Blocking: stop every server we launched (used on quit)."""
        for handle in self.launched_running():
            proc, handle.proc = handle.proc, None
            handle.state = "stopped"
            server_manager.stop_process(proc)
