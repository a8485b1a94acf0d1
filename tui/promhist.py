"""Prometheus histograms: parse the cumulative buckets out of /metrics text, subtract two
scrapes to get a window, and read a quantile the way PromQL's histogram_quantile does
(linear interpolation inside the bucket that holds the rank)."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

# {"vllm:time_to_first_token_seconds": [[le, cumulative count], ...]} with le sorted, +Inf last
Histograms = dict[str, list[list[float]]]


def parse_histograms(text: str) -> Histograms:
    """Every histogram family's buckets, summed over label sets (models, engines)."""
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        buckets = out.setdefault(family.name, {})
        for s in family.samples:
            if s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return {name: [[le, n] for le, n in sorted(b.items())] for name, b in out.items() if b}


def subtract(new: list[list[float]], old: list[list[float]] | None) -> list[list[float]]:
    """Buckets observed between two scrapes (a counter reset, e.g. a restart, gives `new`)."""
    if not old or len(old) != len(new):
        return [list(b) for b in new]
    diff = [[le, n - o] for (le, n), (_, o) in zip(new, old)]
    return [list(b) for b in new] if any(n < 0 for _, n in diff) else diff


def count(buckets: list[list[float]]) -> int:
    return int(buckets[-1][1]) if buckets else 0


def quantile(q: float, buckets: list[list[float]]) -> float | None:
    """The q-quantile (0..1) of cumulative buckets; None when there are no observations."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):  # rank in the +Inf bucket: the largest finite bound
                return prev_le
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


def per_bucket(buckets: list[list[float]]) -> list[tuple[float, int]]:
    """Cumulative -> per-bucket counts, for drawing a histogram."""
    out, prev = [], 0.0
    for le, n in buckets:
        out.append((le, int(n - prev)))
        prev = n
    return out
