"""The generator's side: per-request measurements a bench hands to the session (kind
"request"), reduced to windowed stats at any time t so they sit on the server's time axis."""

from __future__ import annotations

import bisect
import dataclasses
import threading
from dataclasses import dataclass

import numpy as np

from loadgen import RequestRecord

_FIELDS = {f.name for f in dataclasses.fields(RequestRecord)}
LAG_WINDOW_S = 10.0   # the scheduling-lag gauge shows the worst lag of the last 10 s


@dataclass(slots=True)
class ClientRequest:
    done: float                  # first token (or end) time: when its TTFT became known
    ttft_ms: float | None
    itl_ms: list[float]
    lag_ms: float | None         # dispatch (or send) minus the time the load shape wanted
    ok: bool
    server_id: str | None


def from_payload(payload: dict) -> ClientRequest | None:
    try:
        rec = RequestRecord(**{k: v for k, v in payload.items() if k in _FIELDS})
    except TypeError:
        return None
    start = rec.dispatch_time or rec.send_time
    lag = None if start is None else max(start - rec.scheduled_time, 0.0) * 1000.0
    done = rec.first_token_time or rec.end_time or rec.send_time or rec.scheduled_time
    return ClientRequest(done, None if rec.ttft is None else rec.ttft * 1000.0,
                         [g * 1000.0 for g in rec.itl], lag, rec.ok, payload.get("server_id"))


class ClientLog:
    """Requests sorted by `done`; thread-safe (benches add from their own loop)."""

    def __init__(self) -> None:
        self._items: list[ClientRequest] = []
        self._keys: list[float] = []
        self._lock = threading.Lock()

    def add(self, payload: dict) -> None:
        req = from_payload(payload)
        if req is None or payload.get("is_warmup"):
            return
        with self._lock:
            i = bisect.bisect(self._keys, req.done)
            self._keys.insert(i, req.done)
            self._items.insert(i, req)

    def window(self, t0: float, t1: float, server_id: str | None = None) -> list[ClientRequest]:
        with self._lock:
            lo, hi = bisect.bisect_left(self._keys, t0), bisect.bisect_right(self._keys, t1)
            items = self._items[lo:hi]
        return [r for r in items if server_id is None or r.server_id in (None, server_id)]

    def stats(self, t: float, window_s: float, server_id: str | None = None) -> dict:
        """Client TTFT/ITL percentiles over (t - window_s, t], requests/s, worst recent lag."""
        reqs = self.window(t - window_s, t, server_id)
        if not reqs:
            return {}
        ttft = [r.ttft_ms for r in reqs if r.ttft_ms is not None]
        itl = [g for r in reqs for g in r.itl_ms]
        lags = [r.lag_ms for r in reqs if r.lag_ms is not None and r.done >= t - LAG_WINDOW_S]
        out: dict[str, float | None] = {"client_n": float(len(reqs)),
                                        "client_rps": len(reqs) / window_s,
                                        "sched_lag_ms": max(lags) if lags else None}
        for stat, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            out[f"client_ttft_{stat}"] = float(np.percentile(ttft, q)) if ttft else None
            out[f"client_itl_{stat}"] = float(np.percentile(itl, q)) if itl else None
        return out

    def ttft_values(self, t: float, window_s: float) -> list[float]:
        return [r.ttft_ms for r in self.window(t - window_s, t) if r.ttft_ms is not None]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._items)
