"""SLOs for the live verdict: `ttft_p99=500ms`, `itl_p50=0.05s`, `e2el=2s` (p99 when no stat).

The value part is `dyno bench --slo`'s syntax (loadgen.parse_slo: ms by default, `s` for
seconds). A verdict compares the server's windowed percentile (tui/scraper.py) with the limit,
per server, and keeps time in breach; transitions come back as ("breach"|"recovered", text) so
the caller logs them as events that also mark the charts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from loadgen import parse_slo

STATS = ("p50", "p90", "p95", "p99", "mean")
DEFAULT_STAT = "p99"


class SloError(ValueError):
    """A malformed --slo; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Slo:
    metric: str       # ttft | itl | tpot | e2el
    stat: str         # p50 | p90 | p95 | p99 | mean
    limit_ms: float

    @property
    def key(self) -> str:
        return f"{self.metric}_{self.stat}"

    def __str__(self) -> str:
        return f"{self.key}<={self.limit_ms:g}ms"


def parse(text: str) -> Slo:
    name, sep, value = text.replace(":", "=", 1).partition("=")
    metric, _, stat = name.strip().lower().partition("_")
    stat = stat or DEFAULT_STAT
    if stat not in STATS:
        raise SloError(f"--slo {text!r}: statistic {stat!r} must be one of {', '.join(STATS)}")
    try:
        base = parse_slo(f"{metric}={value}" if sep else text)
    except argparse.ArgumentTypeError as e:
        raise SloError(f"--slo {e}; e.g. ttft_p99=500ms") from None
    return Slo(base.metric, stat, base.limit_s * 1000.0)


@dataclass(slots=True)
class SloState:
    value_ms: float | None = None
    is_breached: bool = False
    breach_since: float | None = None
    breach_total_s: float = 0.0

    def time_in_breach(self, now: float) -> float:
        open_s = now - self.breach_since if self.breach_since is not None else 0.0
        return self.breach_total_s + open_s


@dataclass
class SloSet:
    slos: list[Slo] = field(default_factory=list)
    states: dict[tuple[str, str], SloState] = field(default_factory=dict)

    @classmethod
    def from_texts(cls, texts: list[str]) -> SloSet:
        return cls([parse(t) for t in texts])

    def add(self, text: str) -> Slo:
        slo = parse(text)
        self.slos = [s for s in self.slos if s.key != slo.key] + [slo]
        return slo

    def state(self, server_id: str, slo: Slo) -> SloState:
        return self.states.setdefault((server_id, slo.key), SloState())

    def update(self, server_id: str, values: dict[str, float | None],
               now: float) -> list[tuple[str, str]]:
        """Feed one sample's windowed stats (ms, keyed like Slo.key); returns transitions."""
        changes = []
        for slo in self.slos:
            st = self.state(server_id, slo)
            st.value_ms = values.get(slo.key)
            if st.value_ms is None:
                continue
            bad = st.value_ms > slo.limit_ms
            if bad and not st.is_breached:
                st.is_breached, st.breach_since = True, now
                changes.append(("breach", f"{slo.key} {st.value_ms:.0f}ms > {slo.limit_ms:g}ms"))
            elif not bad and st.is_breached:
                st.breach_total_s += now - (st.breach_since or now)
                st.is_breached, st.breach_since = False, None
                changes.append(("recovered", f"{slo.key} {st.value_ms:.0f}ms <= {slo.limit_ms:g}ms"))
        return changes

    def verdict(self, server_id: str | None) -> str:
        """"pass", "fail", or "n/a" (no SLOs or no data yet)."""
        if not self.slos or server_id is None:
            return "n/a"
        states = [self.states.get((server_id, s.key)) for s in self.slos]
        if any(st and st.is_breached for st in states):
            return "fail"
        if any(st and st.value_ms is not None for st in states):
            return "pass"
        return "n/a"

    def reset(self) -> None:
        self.states.clear()
