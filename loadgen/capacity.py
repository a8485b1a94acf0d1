"""The capacity answer: the largest load at which the SLOs hold for a share of requests.

Search: bracket by doubling from `start` until a probe breaks an SLO, then bisect between the
last load that held and the first that broke (to one user, or to `rate_tolerance` of a rate).
A probe holds when, for every SLO, the chosen percentile of that metric is within its limit,
no request failed, and (open loop) the generator kept the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from loadgen.arrivals import LoadPoint
from loadgen.bench import Bench, BenchConfig
from loadgen.events import EventCallback
from loadgen.metrics import SLO, percentile_of

BY = ("concurrency", "rate")


@dataclass(frozen=True)
class CapacitySearch:
    slos: tuple[SLO, ...]
    percentile: float = 90.0
    by: str = "concurrency"
    start: float = 1.0
    max_load: float = 4096.0
    rate_tolerance: float = 0.05
    min_requests_per_user: int = 3  # closed loop: each probe sends at least this many per user
    arrival: str = "poisson"  # open loop (by rate): the arrival process of each probe

    def __post_init__(self) -> None:
        if not self.slos:
            raise ValueError("--capacity needs at least one --slo, e.g. --slo ttft=500ms")
        if self.by not in BY:
            raise ValueError(f"--capacity-by {self.by}: choose concurrency or rate")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"--slo-percentile {self.percentile:g}: must be in (0, 100]")


@dataclass
class Probe:
    load: float
    holds: bool
    values: dict[str, float | None]  # metric -> percentile value, seconds
    summary: dict[str, Any]
    broken: list[str] = field(default_factory=list)  # why it did not hold, worst first


@dataclass
class CapacityAnswer:
    search: CapacitySearch
    load: float | None  # None: not even the starting load holds
    probes: list[Probe]
    sentence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": {
            "by": self.search.by, "load": self.load, "percentile": self.search.percentile,
            "slos": [str(s) for s in self.search.slos], "answer": self.sentence,
            "probes": [{"load": p.load, "holds": p.holds, "broken": p.broken,
                        "values_ms": {k: None if v is None else v * 1000 for k, v in p.values.items()}}
                       for p in self.probes]}}


def _point(search: CapacitySearch, load: float) -> LoadPoint:
    if search.by == "concurrency":
        return LoadPoint(concurrency=int(load))
    return LoadPoint(rate=load, arrival=search.arrival)


async def _probe(bench: Bench, search: CapacitySearch, load: float) -> Probe:
    num = bench.config.num_prompts
    if search.by == "concurrency" and num is not None:
        num = max(num, search.min_requests_per_user * int(load))
    result = await bench.run_point(_point(search, load), num_prompts=num)
    values = {s.metric: percentile_of(result.records, s.metric, search.percentile) for s in search.slos}
    broken = _broken(search, values, result.summary)
    return Probe(load, not broken, values, result.summary, broken)


def _broken(search: CapacitySearch, values: dict[str, float | None], summary: dict) -> list[str]:
    """What broke, worst (largest share over its limit) first."""
    over = []
    for slo in search.slos:
        v = values[slo.metric]
        if v is not None and v > slo.limit_s:
            over.append((v / slo.limit_s, f"p{search.percentile:g} {slo.metric.upper()} {v * 1000:.0f} ms "
                                          f"(limit {slo.limit_s * 1000:g} ms)"))
    broken = [text for _, text in sorted(over, reverse=True)]
    if summary["failed"]:
        broken.append(f"{summary['failed']} requests failed")
    if search.by == "rate" and summary["is_lagging"]:
        broken.append("the generator could not keep the rate")
    return broken


async def search_capacity(bench: Bench, search: CapacitySearch) -> CapacityAnswer:
    probes: dict[float, Probe] = {}

    async def probe(load: float) -> Probe:
        if load not in probes:
            probes[load] = await _probe(bench, search, load)
        return probes[load]

    lo, hi = None, search.start
    while (await probe(hi)).holds:  # bracket: double until it breaks
        lo, hi = hi, hi * 2
        if hi > search.max_load:
            hi = None
            break
    while lo is not None and hi is not None and not _close(search, lo, hi):
        mid = (lo + hi) // 2 if search.by == "concurrency" else math.sqrt(lo * hi)
        lo, hi = (mid, hi) if (await probe(mid)).holds else (lo, mid)
    ordered = sorted(probes.values(), key=lambda p: p.load)
    answer = CapacityAnswer(search, lo, ordered)
    answer.sentence = describe(answer, probes.get(lo) if lo else None, probes.get(hi) if hi else None)
    return answer


def _close(search: CapacitySearch, lo: float, hi: float) -> bool:
    if search.by == "concurrency":
        return hi - lo <= 1
    return hi / lo <= 1 + search.rate_tolerance


def _load_text(search: CapacitySearch, load: float) -> str:
    if search.by == "concurrency":
        return f"{int(load)} concurrent user{'s' if load != 1 else ''}"
    return f"{load:.3g} requests/s"


def describe(answer: CapacityAnswer, ok: Probe | None, broke: Probe | None) -> str:
    """One plain sentence, the numbers beside it, and what broke first past it."""
    s = answer.search
    if ok is None:
        assert broke is not None
        return f"does not hold even {_load_text(s, broke.load)}: {'; '.join(broke.broken)}"
    values = ", ".join(f"p{s.percentile:g} {m.upper()} {v * 1000:.0f} ms"
                       for m, v in ok.values.items() if v is not None)
    text = f"holds {_load_text(s, ok.load)}: {values}, {ok.summary['output_throughput']:.0f} output tokens/s"
    if broke is None:
        return text + f" (the search stopped at its limit, {s.max_load:g})"
    return text + f"; at {_load_text(s, broke.load)} {broke.broken[0]} broke first"


async def afind_capacity(config: BenchConfig, search: CapacitySearch,
                         on_event: EventCallback | None = None) -> tuple[CapacityAnswer, Bench]:
    with Bench(config, on_event).open() as bench:
        answer = await search_capacity(bench, search)
        bench.result.extra.update(answer.to_dict())
    return answer, bench


def find_capacity(config: BenchConfig, search: CapacitySearch,
                  on_event: EventCallback | None = None) -> CapacityAnswer:
    import asyncio

    return asyncio.run(afind_capacity(config, search, on_event))[0]
