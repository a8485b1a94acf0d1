"""Playing a recorded session back: the records go through the same session paths as live
ones (telemetry, events, server states) up to a cursor time; step, play/pause and seek move
the cursor (seeking back rebuilds from the start: the state is cheap to rebuild)."""

from __future__ import annotations

import bisect

from tui.recording import Record
from tui.session import ServerHandle, Session

STEP_S = 1.0


class Replayer:
    def __init__(self, session: Session, records: list[Record]) -> None:
        self.session = session
        self.records = sorted((r for r in records if r.kind != "header"), key=lambda r: r.t)
        self.times = [r.t for r in self.records]
        self.start = self.times[0] if self.times else 0.0
        self.end = self.times[-1] if self.times else 0.0
        self.applied = 0           # records[:applied] are applied
        self.position = self.start
        self.is_playing = False
        self.speed = 1.0
        self.seek(self.start)

    @property
    def offset_s(self) -> float:
        return self.position - self.start

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def seek(self, t: float) -> None:
        t = min(max(t, self.start), self.end)
        if t < self.position or self.applied == 0:
            self._reset()
        upto = bisect.bisect_right(self.times, t)
        for rec in self.records[self.applied:upto]:
            self._apply(rec)
        self.applied, self.position = upto, t
        if t >= self.end:
            self.is_playing = False

    def step(self, seconds: float = STEP_S) -> None:
        self.seek(self.position + seconds)

    def tick(self, elapsed_s: float) -> None:
        """Called by the app's timer while playing."""
        if self.is_playing:
            self.seek(self.position + elapsed_s * self.speed)

    def toggle(self) -> bool:
        if not self.is_playing and self.position >= self.end:
            self.seek(self.start)
        self.is_playing = not self.is_playing
        return self.is_playing

    def _reset(self) -> None:
        s = self.session
        s.telemetry.reset()
        s.events.clear()
        s.slos.reset()
        s.servers.clear()
        self.applied, self.position = 0, self.start

    def _apply(self, rec: Record) -> None:
        s = self.session
        if rec.kind == "server":
            self._server(rec.payload)
        elif rec.kind == "event":
            p = rec.payload
            s.events.add(p.get("kind", "info"), p.get("text", ""), p.get("server_id"), at=rec.t)
        else:
            s.telemetry.ingest(rec.kind, dict(rec.payload, t=rec.t))

    def _server(self, p: dict) -> None:
        s = self.session
        handle = s.get(p.get("id"))
        if handle is None:
            handle = ServerHandle(p["id"], p.get("name", p["id"]), p.get("base_url", ""),
                                  launched=bool(p.get("launched")), flags=p.get("flags") or {})
            s.servers.append(handle)
        handle.model = p.get("model")
        handle.state = p.get("state", handle.state)
        handle.started_at = p.get("started_at", handle.started_at)
        if s.selected is None or s.selected not in s.servers:
            s.selected = handle
