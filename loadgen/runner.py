"""Runs one load point: sends the workload in its load shape and records every request.

Closed loop: `concurrency` workers, each sending its next request when the last one ends.
Open loop: a dispatcher wakes at each intended time and starts the request as a task, so a
slow server never slows the arrivals; how late the dispatcher itself was is recorded per
request (scheduling lag). Records go to the sink the moment each request ends.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from loadgen.arrivals import LoadPoint, arrival_offsets
from loadgen.backend import OpenAIBackend
from loadgen.datasets import Conversation, RequestSpec, WorkItem
from loadgen.events import EventCallback, FirstToken, RequestSent
from loadgen.schema import RequestRecord

# asyncio's timers wake up to ~1 ms late (epoll rounds its timeout up to whole ms), so the
# dispatcher sleeps until this close to the due time and then yields in a loop until it.
SPIN_WINDOW_S = 0.0015
# Stop sending after this many connection failures in a row: the server has gone away.
MAX_CONSECUTIVE_CONNECT_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic time for every difference, shifted once to epoch time for the records."""

    perf0: float
    epoch0: float

    @classmethod
    def start(cls) -> Clock:
        return cls(time.perf_counter(), time.time())

    def now(self) -> float:
        return self.epoch0 + (time.perf_counter() - self.perf0)

    def to_epoch(self, perf: float) -> float:
        return self.epoch0 + (perf - self.perf0)


@dataclass(frozen=True, slots=True)
class Limits:
    num_requests: int | None  # work items to send after the warm-up
    duration_s: float | None  # stop sending new requests after this long
    warmup: int = 0


@dataclass
class PointRun:
    """State of one running point, shared by its workers."""

    point: LoadPoint
    point_no: int
    run_id: str
    limits: Limits
    backend: OpenAIBackend
    sink: Callable[[RequestRecord], None]
    clock: Clock
    records: list[RequestRecord] = field(default_factory=list)
    stop_reason: str | None = None
    consecutive_connect_errors: int = 0
    started: float = 0.0  # perf_counter at the start
    # Asked after each finished request: a non-empty reason ends the point at once (requests
    # in flight are cancelled and left out of the records). The caller's early stop.
    should_stop: Callable[[], str | None] | None = None
    # Live events of each request in flight (RequestSent, FirstToken); RequestDone is the sink's.
    on_event: EventCallback | None = None
    stopped_early: bool = False
    # Set once the workers are told to end (run_point returned, Ctrl-C): none may start another
    # request after it. An HTTP client can swallow a CancelledError and uncancel the task
    # (httpx/anyio did), so a worker cannot rely on seeing its own cancellation (seen in CI:
    # after Ctrl-C the run went on sending and `dyno bench` never exited).
    halted: bool = False
    _load: asyncio.Task | None = None

    def expired(self) -> bool:
        d = self.limits.duration_s
        return (self.halted or self.stop_reason is not None
                or (d is not None and time.perf_counter() - self.started >= d))

    def new_record(self, index: int, scheduled_perf: float, dispatch_perf: float | None) -> RequestRecord:
        clock = self.clock
        return RequestRecord(
            request_id=f"{self.run_id}-{self.point_no}-{index}", point=self.point.label, index=index,
            is_warmup=index < self.limits.warmup, scheduled_time=clock.to_epoch(scheduled_perf),
            dispatch_time=None if dispatch_perf is None else clock.to_epoch(dispatch_perf))

    async def send(self, spec: RequestSpec, record: RequestRecord) -> str:
        """One request through the backend, then finished; with no on_event, no hooks either."""
        if self.on_event is None:
            reply = await self.backend.send(spec, record)
        else:
            reply = await self.backend.send(spec, record, self._sent, self._first_token)
        self.finish(record)
        return reply

    def _sent(self, record: RequestRecord) -> None:
        self.on_event(RequestSent(record.request_id, self.run_id, record.point, record.index, record.is_warmup,
                                  record.scheduled_time, record.send_time, record.dispatch_time))

    def _first_token(self, record: RequestRecord) -> None:
        self.on_event(FirstToken(record.request_id, record.index, record.first_token_time))

    def finish(self, record: RequestRecord) -> None:
        self.records.append(record)
        self.sink(record)
        if self.should_stop is not None and not self.stopped_early:
            reason = self.should_stop()
            if reason:
                self.stop_reason, self.stopped_early = f"stopped early: {reason}", True
                if self._load is not None:
                    self._load.cancel()
                return
        if record.error_kind == "connect":
            self.consecutive_connect_errors += 1
            if self.consecutive_connect_errors >= MAX_CONSECUTIVE_CONNECT_ERRORS:
                self.stop_reason = f"stopped: {record.error}"
        else:
            self.consecutive_connect_errors = 0


def make_run_id() -> str:
    return f"dyno-{uuid.uuid4().hex[:8]}"


def take_items(workload: Iterator[WorkItem], limits: Limits) -> Iterator[tuple[int, WorkItem]]:
    """Warm-up plus measured items, built before the clock starts; endless (built as they
    go) when only a duration limits the run."""
    if limits.num_requests is None:
        return enumerate(workload)
    return enumerate(list(itertools.islice(workload, limits.warmup + limits.num_requests)))


async def run_point(run: PointRun, workload: Iterator[WorkItem], rng: np.random.Generator) -> list[RequestRecord]:
    items = take_items(workload, run.limits)
    run.started = time.perf_counter()
    # The load runs as its own task so an early stop can cancel it (and with it every request
    # in flight) without cancelling the caller; the caller's own cancellation (Ctrl-C) reaches
    # it too, as the task awaited.
    run._load = asyncio.create_task(_closed_loop(run, items) if run.point.is_closed
                                    else _open_loop(run, items, rng))
    try:
        await run._load
    except asyncio.CancelledError:
        if not run.stopped_early or _is_cancelled():
            raise
    finally:
        run.halted = True
        run._load = None
    return run.records


async def _closed_loop(run: PointRun, items: Iterator[tuple[int, WorkItem]]) -> None:

    async def worker() -> None:
        while not run.expired():
            if _is_cancelled():
                raise asyncio.CancelledError
            nxt = next(items, None)
            if nxt is None:
                return
            now = time.perf_counter()
            await _send_item(run, nxt[0], nxt[1], now, now)

    await _gather_all(run, [worker() for _ in range(run.point.concurrency or 1)])


async def _open_loop(run: PointRun, items: Iterator[tuple[int, WorkItem]], rng: np.random.Generator) -> None:
    cap = asyncio.Semaphore(run.point.max_concurrency) if run.point.max_concurrency else None
    tasks: set[asyncio.Task] = set()
    offsets = arrival_offsets(run.point, rng)
    try:
        for (index, item), offset in zip(items, offsets):
            if isinstance(item, RequestSpec) and item.arrival_s is not None:
                offset = item.arrival_s  # trace replay: the trace's own clock
            due = run.started + offset
            d = run.limits.duration_s
            if run.halted or run.stop_reason is not None or (d is not None and offset >= d):
                break
            await sleep_until(due)
            if _is_cancelled() or run.halted:
                raise asyncio.CancelledError
            task = asyncio.create_task(_send_item(run, index, item, due, time.perf_counter(), cap))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _is_cancelled() -> bool:
    """True once this task was asked to stop (Ctrl-C), even if a library swallowed the
    CancelledError on the way (seen under load: the run then went on sending)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def sleep_until(due: float) -> None:
    """Sleep to `due` (perf_counter) with sub-millisecond accuracy."""
    while (delay := due - time.perf_counter()) > 0:
        await asyncio.sleep(delay - SPIN_WINDOW_S if delay > SPIN_WINDOW_S else 0)


async def _gather_all(run: PointRun, coros: list) -> None:
    """Run the workers; a worker's error or our own cancellation ends them all at once.
    asyncio.wait, unlike gather, returns on cancellation without waiting for the workers: one
    that swallowed its cancel must not hold up Ctrl-C; `halted` stops it at its next request."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
    finally:
        run.halted = True
        for t in tasks:
            t.cancel()


async def _send_item(run: PointRun, index: int, item: WorkItem, due: float, dispatched: float,
                     cap: asyncio.Semaphore | None = None) -> None:
    lag_perf = None if run.point.is_closed else dispatched
    if cap is not None:
        await cap.acquire()
    try:
        if isinstance(item, Conversation):
            await _send_conversation(run, index, item, due, lag_perf)
        else:
            await run.send(item, run.new_record(index, due, lag_perf))
    finally:
        if cap is not None:
            cap.release()


async def _send_conversation(run: PointRun, index: int, conv: Conversation, due: float,
                             dispatched: float | None) -> None:
    """Turns in order; each carries the history, with the replies the server really gave."""
    history: list[dict[str, str]] = []
    for turn_no, turn in enumerate(conv.turns):
        if run.stop_reason is not None or run.halted:
            return
        history.append({"role": "user", "content": turn.prompt})
        spec = RequestSpec(turn.index, turn.prompt, turn.input_tokens, turn.output_tokens, list(history))
        if not run.backend.config.is_chat:  # completions: the history as one prompt
            spec.prompt = "\n".join(m["content"] for m in history)
        record = run.new_record(index, due, dispatched)
        record.request_id += f"-t{turn_no}"
        record.session_id, record.turn = f"{run.run_id}-{conv.session_id}", turn_no
        reply = await run.send(spec, record)
        if not record.ok:
            return
        history.append({"role": "assistant", "content": reply})
        due, dispatched = time.perf_counter(), None  # next turn: right after this reply
