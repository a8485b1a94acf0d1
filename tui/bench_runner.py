"""A benchmark from the dashboard: a form's choices -> loadgen's BenchConfig -> a run on its own
event loop in a worker thread, its events handed to the UI as they come.

The run writes its result directory exactly as `dyno bench --result-dir` does (loadgen's Bench
writes requests.jsonl, summary.json, summary.csv and points/), under the session's results dir.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from loadgen import SLO, Bench, BenchConfig, BenchResult, DatasetConfig, Event, LoadPoint
from loadgen.sweep import sweep

LOAD_MODES = ("concurrency", "rate", "sweep")


@dataclass(frozen=True)
class BenchPlan:
    """What the Bench form asks for; `values` are concurrencies or request rates (one point each)."""

    base_url: str
    model: str | None = None
    api_key: str | None = None
    dataset: str = "random"
    input_len: int = 128
    output_len: int = 32
    num_prompts: int = 50
    mode: str = "concurrency"
    values: tuple[float, ...] = (4,)
    sweep_points: int = 4
    slos: tuple[SLO, ...] = ()
    seed: int = 0

    def points(self) -> tuple[LoadPoint, ...]:
        """The load points run one after another (a sweep picks its own after two probes)."""
        if self.mode == "concurrency":
            return tuple(LoadPoint(concurrency=int(v)) for v in self.values)
        if self.mode == "rate":
            return tuple(LoadPoint(rate=float(v)) for v in self.values)
        return (LoadPoint(concurrency=1), LoadPoint(rate=math.inf))

    @property
    def num_points(self) -> int:
        return self.sweep_points if self.mode == "sweep" else len(self.values)

    @property
    def total_requests(self) -> int:
        return self.num_prompts * self.num_points


class PlanError(ValueError):
    """A form value that cannot make a run; the message is one line for the UI."""


def parse_values(text: str, mode: str) -> tuple[float, ...]:
    """`4 16 64` (concurrency) or `2 5 inf` (rate); commas work as separators too."""
    if mode == "sweep":
        return ()
    parts = text.replace(",", " ").split()
    if not parts:
        raise PlanError(f"give at least one {mode} value")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise PlanError(f"{text!r}: {mode} values are numbers like 4 16 64") from None
    if mode == "concurrency" and any(v < 1 or v != int(v) for v in values):
        raise PlanError(f"{text!r}: a concurrency is a whole number >= 1")
    if mode == "rate" and any(not v > 0 for v in values):
        raise PlanError(f"{text!r}: a request rate must be > 0 (inf sends all at once)")
    return values


def result_dir_for(results_dir: Path, label: str = "bench") -> Path:
    """A fresh directory per run: <results_dir>/<label>-YYYYmmdd-HHMMSS[-n]."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = results_dir / f"{label}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = results_dir / f"{label}-{stamp}-{n}"
    return path


def bench_config(plan: BenchPlan, result_dir: Path | None) -> BenchConfig:
    dataset = DatasetConfig(plan.dataset, input_len=f"fixed:{plan.input_len}",
                            output_len=f"fixed:{plan.output_len}", seed=plan.seed)
    return BenchConfig(base_url=plan.base_url, model=plan.model, api_key=plan.api_key, dataset=dataset,
                       points=plan.points(), num_prompts=plan.num_prompts, slos=plan.slos, seed=plan.seed,
                       result_dir=str(result_dir) if result_dir else None, request_timeout_s=120.0)


@dataclass
class BenchRunner:
    """One run. `run()` blocks (call it from a thread worker); `stop()` is safe from any thread:
    loadgen cancels the requests in flight and summarizes what finished."""

    plan: BenchPlan
    result_dir: Path | None
    on_event: Callable[[Event], None] | None = None
    stop_reason: str | None = None
    run_id: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self, reason: str = "stopped from the dashboard") -> None:
        self.stop_reason = reason
        self._stop.set()

    def should_stop(self) -> str | None:
        return self.stop_reason if self._stop.is_set() else None

    def run(self) -> BenchResult:
        """The whole run on a private event loop (the UI's loop is never blocked by it)."""
        return asyncio.run(self._arun())

    async def _arun(self) -> BenchResult:
        config = bench_config(self.plan, self.result_dir)
        with StoppableBench(config, self.on_event, self.should_stop).open() as bench:
            self.run_id = bench.run_id
            if self.plan.mode == "sweep":
                await self._run_sweep(bench)
            else:
                for point in config.points:
                    await bench.run_point(point)
                    if bench.result.stopped:
                        break
        return bench.result

    async def _run_sweep(self, bench: Bench) -> None:
        try:
            await sweep(bench, self.plan.sweep_points)
        except SweepStopped:
            pass


class SweepStopped(Exception):
    """A stopped run starts no further point (loadgen's sweep would run each one to its first request)."""


class StoppableBench(Bench):
    async def run_point(self, point: LoadPoint, num_prompts: int | None = None,
                        duration_s: float | None = None):
        if self.result.stopped:
            raise SweepStopped(self.result.stopped)
        return await super().run_point(point, num_prompts, duration_s)
