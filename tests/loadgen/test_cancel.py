"""Ctrl-C ends a run even when the HTTP library swallows the cancellation.

httpx (through anyio) can catch a CancelledError inside a request and uncancel its task; a
worker that only watched its own task's cancellation then went on sending after Ctrl-C, and
`dyno bench` never exited (seen in CI). The run's own `halted` flag stops every worker."""

from __future__ import annotations

import asyncio
import itertools
import threading

import numpy as np

from loadgen.arrivals import LoadPoint
from loadgen.datasets import RequestSpec
from loadgen.runner import Clock, Limits, PointRun, run_point


class SwallowingBackend:
    """Each request takes 5 ms and, like anyio, eats a cancellation that lands inside it."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, spec, record) -> str:
        self.sent += 1
        try:
            await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
        return ""


def _endless():
    return (RequestSpec(i, "x", 1, 1) for i in itertools.count())


async def _cancel_after(point: LoadPoint) -> tuple[int, int]:
    backend = SwallowingBackend()
    run = PointRun(point, 0, "r", Limits(None, None), backend, lambda record: None, Clock.start())
    task = asyncio.create_task(run_point(run, _endless(), np.random.default_rng(0)))
    await asyncio.sleep(0.1)
    task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError), outcome
    at_cancel = backend.sent
    await asyncio.sleep(0.1)  # long enough for 20 more requests per worker, were any still sending
    return at_cancel, backend.sent


def _run_bounded(point: LoadPoint, timeout_s: float = 10.0) -> tuple[int, int]:
    """In a daemon thread: a regression hangs for good, and must fail the test, not hang it."""
    result: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(_cancel_after(point))), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the run did not end after Ctrl-C: its workers went on sending"
    return result[0]


def test_closed_loop_workers_stop_after_a_swallowed_cancel():
    at_cancel, later = _run_bounded(LoadPoint(concurrency=2))
    assert at_cancel >= 2 and later == at_cancel


def test_open_loop_sends_nothing_after_a_swallowed_cancel():
    at_cancel, later = _run_bounded(LoadPoint(rate=200.0))
    assert at_cancel >= 2 and later == at_cancel
