"""Server-side time series: each /metrics scrape of a server turned into the numbers the
Monitor shows (rates from counter deltas, percentiles from histogram windows), kept for the
last minutes. Fed by "metrics" records, live from the scraper or from a replayed file."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

from tui import promhist

WINDOW_S = 60.0         # percentiles and hit rate cover the last minute
HISTORY = 1800          # samples kept per server (30 min at 1/s)

# What we read, first name found wins: dyno/vLLM names, then loadgen's mock server's.
NAMES = {
    "gen_tokens": ("vllm:generation_tokens_total", "mock_generation_tokens_total"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "running": ("vllm:num_requests_running", "mock_num_requests_running"),
    "waiting": ("vllm:num_requests_waiting", "mock_num_requests_waiting"),
    "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "free_blocks": ("dyno:kv_cache_free_blocks",),
    "total_blocks": ("dyno:kv_cache_total_blocks",),
    "cached_blocks": ("dyno:kv_cache_cached_blocks",),
    "prefix_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
}
HISTS = {
    "ttft": "vllm:time_to_first_token_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "tpot": "vllm:time_per_output_token_seconds",
    "e2el": "vllm:e2e_request_latency_seconds",
}
_LABELS = re.compile(r"\{.*\}$")


def by_name(values: dict[str, float]) -> dict[str, float]:
    """parse_metrics keys carry labels; sum them per metric name."""
    out: dict[str, float] = {}
    for key, v in values.items():
        name = _LABELS.sub("", key)
        out[name] = out.get(name, 0.0) + v
    return out


def pick(values: dict[str, float], names: tuple[str, ...]) -> float | None:
    return next((values[n] for n in names if n in values), None)


@dataclass(slots=True)
class Raw:
    t: float
    values: dict[str, float]
    hists: promhist.Histograms


@dataclass
class ServerSeries:
    """One server's derived samples: `points[i]` = (t, {name: value or None})."""

    raws: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    points: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    window_hists: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, t: float, values: dict[str, float], hists: promhist.Histograms) -> dict:
        raw = Raw(t, by_name(values), hists)
        prev = self.raws[-1] if self.raws else None
        base = self._window_start(t) or raw   # the first scrape: everything since start
        self.raws.append(raw)
        point = derive(raw, prev, base)
        self.window_hists = {k: window(raw, base, n) for k, n in HISTS.items() if n in raw.hists}
        self.points.append((t, point))
        return point

    def _window_start(self, t: float) -> Raw | None:
        """The oldest kept scrape within the window (the window's baseline)."""
        for raw in self.raws:
            if raw.t >= t - WINDOW_S:
                return raw
        return self.raws[-1] if self.raws else None

    def latest(self) -> dict:
        return self.points[-1][1] if self.points else {}

    def series(self, name: str, since: float | None = None) -> list[tuple[float, float]]:
        return [(t, p[name]) for t, p in self.points
                if p.get(name) is not None and (since is None or t >= since)]


def _rate(raw: Raw, prev: Raw | None, names: tuple[str, ...]) -> float | None:
    now, before = pick(raw.values, names), pick(prev.values, names) if prev else None
    if now is None or before is None or raw.t <= prev.t:
        return None
    return max(now - before, 0.0) / (raw.t - prev.t)


def window(raw: Raw, base: Raw, name: str) -> list[list[float]]:
    """A histogram's buckets observed since `base` (all of them when base is raw itself)."""
    return promhist.subtract(raw.hists[name], base.hists.get(name) if base is not raw else None)


def _used_blocks(free: float | None, total: float | None, usage: float | None) -> float | None:
    """total - free; a server without the total gauge: total = free / (1 - usage), unknown at
    100% usage."""
    if free is None:
        return None
    if total is not None:
        return total - free
    if usage is not None and usage < 1.0:
        return round(free * usage / (1.0 - usage))
    return None


def derive(raw: Raw, prev: Raw | None, old: Raw) -> dict:
    v = raw.values
    out: dict[str, float | None] = {
        "gen_tps": _rate(raw, prev, NAMES["gen_tokens"]),
        "prompt_tps": _rate(raw, prev, NAMES["prompt_tokens"]),
        "running": pick(v, NAMES["running"]),
        "waiting": pick(v, NAMES["waiting"]),
    }
    usage = pick(v, NAMES["kv_usage"])
    out["kv_usage_pct"] = None if usage is None else usage * 100.0
    free = pick(v, NAMES["free_blocks"])
    out["kv_free_blocks"] = free
    out["kv_used_blocks"] = _used_blocks(free, pick(v, NAMES["total_blocks"]), usage)
    out["kv_cached_blocks"] = pick(v, NAMES["cached_blocks"])
    q_now, q_old = pick(v, NAMES["prefix_queries"]), pick(old.values, NAMES["prefix_queries"])
    h_now, h_old = pick(v, NAMES["prefix_hits"]), pick(old.values, NAMES["prefix_hits"])
    if None not in (q_now, q_old, h_now, h_old) and q_now - q_old > 0:
        out["prefix_hit_pct"] = 100.0 * (h_now - h_old) / (q_now - q_old)
    else:
        out["prefix_hit_pct"] = None
    for key, name in HISTS.items():
        if name not in raw.hists:
            continue
        buckets = window(raw, old, name)
        out[f"{key}_n"] = promhist.count(buckets)
        for stat, q in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
            value = promhist.quantile(q, buckets)
            out[f"{key}_{stat}"] = None if value is None else value * 1000.0
    return out


class MetricsStore:
    """Every server's series, by server id."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerSeries] = {}

    def get(self, server_id: str | None) -> ServerSeries | None:
        return self.servers.get(server_id) if server_id else None

    def add(self, server_id: str, t: float, values: dict[str, float],
            hists: promhist.Histograms) -> dict:
        return self.servers.setdefault(server_id, ServerSeries()).add(t, values, hists)

    def clear(self) -> None:
        self.servers.clear()
