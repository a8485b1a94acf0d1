"""Sweep (as GuideLLM's): find the range first, then space open-loop rates inside it.

1. synchronous: one request at a time, the rate a single user sees;
2. throughput: everything at once (bounded by --max-concurrency if given), the saturation rate;
3. `num_points - 2` rates evenly spaced strictly between the two, each run open loop.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from loadgen.arrivals import LoadPoint
from loadgen.bench import Bench, BenchConfig, BenchResult
from loadgen.events import EventCallback


def sweep_rates(sync_rate: float, max_rate: float, num_points: int) -> list[float]:
    """The rates strictly between the synchronous and the saturation rate."""
    if num_points <= 2 or not max_rate > sync_rate > 0:
        return []
    return [float(r) for r in np.linspace(sync_rate, max_rate, num_points)[1:-1]]


async def sweep(bench: Bench, num_points: int = 10, arrival: str = "poisson", burstiness: float = 1.0,
                max_concurrency: int | None = None) -> None:
    """Run the sweep's points on an open bench; its range goes into the run summary."""
    sync = await bench.run_point(LoadPoint(concurrency=1))
    peak = await bench.run_point(LoadPoint(rate=math.inf, max_concurrency=max_concurrency))
    rates = sweep_rates(sync.summary["request_throughput"], peak.summary["request_throughput"], num_points)
    for rate in rates:
        await bench.run_point(LoadPoint(rate=rate, arrival=arrival, burstiness=burstiness,
                                        max_concurrency=max_concurrency))
    bench.result.extra["sweep"] = {"synchronous_rate": sync.summary["request_throughput"],
                                   "saturation_rate": peak.summary["request_throughput"], "rates": rates}


async def arun_sweep(config: BenchConfig, num_points: int = 10, arrival: str = "poisson",
                     max_concurrency: int | None = None, on_event: EventCallback | None = None) -> BenchResult:
    with Bench(config, on_event).open() as bench:
        await sweep(bench, num_points, arrival, max_concurrency=max_concurrency)
    return bench.result


def run_sweep(config: BenchConfig, num_points: int = 10, arrival: str = "poisson",
              max_concurrency: int | None = None, on_event: EventCallback | None = None) -> BenchResult:
    return asyncio.run(arun_sweep(config, num_points, arrival, max_concurrency, on_event))
