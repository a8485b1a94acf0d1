"""Histogram rows for the Monitor: the client's TTFT values binned on the server's bucket
bounds (so the two histograms compare bar for bar), or on fixed bounds without a server one."""

from __future__ import annotations

import bisect

DEFAULT_BOUNDS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


def bin_values(values_ms: list[float], bounds_s: list[float]) -> list[int]:
    """Client values counted into the server's buckets (le semantics)."""
    counts = [0] * len(bounds_s)
    for v in values_ms:
        i = bisect.bisect_left(bounds_s, v / 1000.0)
        counts[min(i, len(counts) - 1)] += 1
    return counts


def client_rows(values_ms: list[float],
                server_buckets: list[list[float]] | None) -> list[tuple[float, int]]:
    bounds = [le for le, _ in server_buckets] if server_buckets else list(DEFAULT_BOUNDS_S)
    if bounds[-1] != float("inf"):
        bounds.append(float("inf"))
    return list(zip(bounds, bin_values(values_ms, bounds)))
