"""Live events of a run, for the dashboard and the tuner: one per finished request, one per
finished load point. Callbacks run on the benchmark's event loop, so keep them quick (post a
message, append to a list) or the generator's own timing suffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from loadgen.arrivals import LoadPoint
from loadgen.schema import RequestRecord


@dataclass(frozen=True, slots=True)
class RequestDone:
    record: RequestRecord


@dataclass(frozen=True, slots=True)
class PointStarted:
    point: LoadPoint
    num_requests: int | None  # None when only a duration limits it


@dataclass(frozen=True, slots=True)
class PointDone:
    point: LoadPoint
    summary: dict[str, Any]


Event = RequestDone | PointStarted | PointDone
EventCallback = Callable[[Event], None]
