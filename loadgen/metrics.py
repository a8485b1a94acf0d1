"""Summary statistics of one load point, with the keys and definitions of vLLM's benchmark.

Definitions (vLLM `benchmark_serving` / `vllm bench serve`):
- duration: from the first measured request's intended send time to the last one's end.
- TTFT: send to the first chunk with content. E2EL: send to the last chunk with content.
- TPOT: (E2EL - TTFT) / (output tokens - 1), for requests with more than one output token;
  for goodput a request of one token counts as TPOT 0, as vLLM does.
- ITL: each gap between content chunks; a chunk of k tokens is k gaps of gap / k.
- Empty series report 0, as vLLM's `np.mean(x or 0)` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from loadgen.schema import LATENCY_METRICS, SCHEMA_VERSION, STAT_PREFIXES, RequestRecord, metric_key

# The generator says it could not keep the load shape when it was this late.
LAG_MEDIAN_LIMIT_S = 0.001
LAG_P99_LIMIT_S = 0.050

SLO_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True, slots=True)
class SLO:
    """A latency target: `metric` at most `limit_s` seconds."""

    metric: str
    limit_s: float

    def __str__(self) -> str:
        return f"{self.metric}<={self.limit_s * 1000:g}ms"


def stats_ms(values: Iterable[float], name: str) -> dict[str, float]:
    arr = np.asarray(list(values), dtype=float) * 1000.0
    if arr.size == 0:
        arr = np.zeros(1)
    out = {
        metric_key("mean", name): float(arr.mean()),
        metric_key("median", name): float(np.median(arr)),
        metric_key("std", name): float(arr.std()),
    }
    for stat in STAT_PREFIXES[3:]:
        q = float(stat[1:].replace("_", "."))
        out[metric_key(stat, name)] = float(np.percentile(arr, q))
    return out


def series(records: list[RequestRecord], metric: str) -> list[float]:
    """The values of one latency metric over successful requests (ITL flattened)."""
    ok = [r for r in records if r.ok]
    if metric == "itl":
        return [g for r in ok for g in r.itl]
    values = (getattr(r, metric) for r in ok)
    return [v for v in values if v is not None]


def is_good(record: RequestRecord, slos: Iterable[SLO]) -> bool:
    """Met every SLO; a one-token request has TPOT 0 here (vLLM's goodput rule)."""
    if not record.ok:
        return False
    for slo in slos:
        if slo.metric == "itl":
            value = max(record.itl, default=0.0)
        elif slo.metric == "tpot":
            value = record.tpot or 0.0
        else:
            value = getattr(record, slo.metric)
        if value is None or value > slo.limit_s:
            return False
    return True


def duration_of(records: list[RequestRecord]) -> float:
    starts = [r.scheduled_time for r in records]
    ends = [r.end_time for r in records if r.end_time is not None]
    if not starts or not ends:
        return 0.0
    return max(max(ends) - min(starts), 1e-9)


def summarize(records: list[RequestRecord], slos: Iterable[SLO] = ()) -> dict[str, Any]:
    """A flat summary of one load point's measured (non-warm-up) records."""
    slos = list(slos)
    measured = [r for r in records if not r.is_warmup]
    ok = [r for r in measured if r.ok]
    duration = duration_of(measured)
    total_in = sum(r.input_tokens for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    per_s = 1.0 / duration if duration > 0 else 0.0
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "point": measured[0].point if measured else "",
        "completed": len(ok),
        "failed": len(measured) - len(ok),
        "failed_by_kind": dict(Counter(r.error_kind for r in measured if not r.ok)),
        "first_error_by_kind": first_errors(measured),
        "duration": duration,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) * per_s,
        "output_throughput": total_out * per_s,
        "total_token_throughput": (total_in + total_out) * per_s,
        "request_goodput": sum(is_good(r, slos) for r in ok) * per_s if slos else None,
        "slos": [str(s) for s in slos],
    }
    for metric in LATENCY_METRICS:
        out.update(stats_ms(series(measured, metric), metric))
    # Coordinated-omission view: the same latencies from the intended send time.
    for metric in ("ttft_intended", "e2el_intended"):
        out.update(stats_ms(series(measured, metric), metric))
    out.update(lag_summary(measured))
    return out


def first_errors(records: list[RequestRecord]) -> dict[str, str]:
    """One example message per kind of failure, for the one-line report."""
    out: dict[str, str] = {}
    for r in records:
        if not r.ok and r.error_kind not in out:
            out[str(r.error_kind)] = r.error or ""
    return out


def lag_summary(records: list[RequestRecord]) -> dict[str, Any]:
    lags = np.asarray([r.sched_lag for r in records if r.sched_lag is not None], dtype=float)
    if lags.size == 0:
        lags = np.zeros(1)
    median, p99 = float(np.median(lags)), float(np.percentile(lags, 99))
    return {
        "mean_sched_lag_ms": float(lags.mean()) * 1000,
        "median_sched_lag_ms": median * 1000,
        "p99_sched_lag_ms": p99 * 1000,
        "max_sched_lag_ms": float(lags.max()) * 1000,
        "is_lagging": median > LAG_MEDIAN_LIMIT_S or p99 > LAG_P99_LIMIT_S,
    }


def percentile_of(records: list[RequestRecord], metric: str, percentile: float) -> float | None:
    """One percentile (0-100) of a metric in seconds, or None with no samples."""
    values = series([r for r in records if not r.is_warmup], metric)
    return float(np.percentile(values, percentile)) if values else None
