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


async def arun_sweep(config: BenchConfig, num_points: int = 10, arrival: str = "poisson",
                     max_concurrency: int | None = None, on_event: EventCallback | None = None) -> BenchResult:
    bench = Bench(config, on_event).open()
    try:
        sync = await bench.run_point(LoadPoint(concurrency=1))
        peak = await bench.run_point(LoadPoint(rate=math.inf, max_concurrency=max_concurrency))
        rates = sweep_rates(sync.summary["request_throughput"], peak.summary["request_throughput"], num_points)
        for rate in rates:
            await bench.run_point(LoadPoint(rate=rate, arrival=arrival, max_concurrency=max_concurrency))
        bench.result.extra["sweep"] = {"synchronous_rate": sync.summary["request_throughput"],
                                       "saturation_rate": peak.summary["request_throughput"], "rates": rates}
    finally:
        bench.write_summary()
    return bench.result


def run_sweep(config: BenchConfig, num_points: int = 10, arrival: str = "poisson",
              max_concurrency: int | None = None, on_event: EventCallback | None = None) -> BenchResult:
    return asyncio.run(arun_sweep(config, num_points, arrival, max_concurrency, on_event))
