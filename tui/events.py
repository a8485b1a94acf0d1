"""The session's event log: breaches, recoveries, restarts, scrape failures, bench and trial
milestones. One list, newest last; every screen reads it, the event-log widget shows it, and
the charts draw a mark at each event's time."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

# Kinds in use; others are allowed (shown as they are).
KINDS = ("breach", "recovered", "restart", "scrape_failed", "bench", "trial", "info",
         "launch", "stop", "failed", "unreachable", "attach")


@dataclass(slots=True)
class Event:
    time: float            # epoch seconds
    kind: str
    text: str
    server_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class EventLog:
    """Thread-safe append-only list of events. `on_add` (set by the session) records each one."""

    def __init__(self, on_add: Callable[[Event], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self.on_add = on_add
        self.clock = clock

    def add(self, kind: str, text: str, server_id: str | None = None,
            at: float | None = None) -> Event:
        event = Event(self.clock() if at is None else at, kind, text, server_id)
        with self._lock:
            self._events.append(event)
        if self.on_add is not None:
            self.on_add(event)
        return event

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def all(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def since(self, t: float) -> list[Event]:
        return [e for e in self.all() if e.time >= t]

    def __len__(self) -> int:
        return len(self._events)
