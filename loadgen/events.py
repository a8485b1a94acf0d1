"""Live events of a run, for the dashboard and the tuner. Per request: RequestSent as it goes
out, FirstToken when its first content arrives (never for a request that fails before one), and
RequestDone when it ends, ok or failed; a request cancelled by an early stop or Ctrl-C ends
without RequestDone. Per load point: PointStarted and PointDone. Events of one request share its
`request_id` and come in that order.

Callbacks run on the benchmark's event loop, so keep them quick (post a message, append to a
list) or the generator's own timing suffers. With no callback nothing is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from loadgen.arrivals import LoadPoint
from loadgen.schema import RequestRecord


@dataclass(frozen=True, slots=True)
class RequestSent:
    """The request went out (its record's `send_time`); times are epoch seconds, as in records."""

    request_id: str
    run_id: str
    point: str  # the load point's label
    index: int  # position in the workload (the turns of a conversation share it)
    is_warmup: bool
    due_time: float  # when the load shape wanted it sent (the record's scheduled_time)
    send_time: float
    dispatch_time: float | None  # when the open loop's dispatcher got to it; None in a closed loop


@dataclass(frozen=True, slots=True)
class FirstToken:
    request_id: str
    index: int
    time: float  # the record's first_token_time


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


Event = RequestSent | FirstToken | RequestDone | PointStarted | PointDone
EventCallback = Callable[[Event], None]
