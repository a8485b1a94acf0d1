"""What a study optimizes: metrics of loadgen's summary, their directions, and SLO constraints.

Presets name the usual questions; `--metric KEY:max|min` (repeatable) names any summary key.
Two or more metrics make a multi-objective study (a Pareto front). SLOs are constraints in
Optuna's sense: a value <= 0 is satisfied, so a fast config that breaks the latency target
never becomes "best".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen import SLO


@dataclass(frozen=True)
class Metric:
    key: str  # a loadgen summary key, e.g. output_throughput, p99_ttft_ms
    direction: str  # maximize | minimize

    def __str__(self) -> str:
        return f"{self.key}:{'max' if self.direction == 'maximize' else 'min'}"


PRESETS: dict[str, tuple[Metric, ...]] = {
    "throughput": (Metric("output_throughput", "maximize"),),
    "goodput": (Metric("request_goodput", "maximize"),),
    "latency": (Metric("p99_ttft_ms", "minimize"),),
    "balanced": (Metric("output_throughput", "maximize"), Metric("p99_ttft_ms", "minimize")),
}


def parse_metric(text: str) -> Metric:
    """`p99_tpot_ms:min`, `output_throughput:max`, or a bare key (latencies min, others max)."""
    key, _, way = text.partition(":")
    if not way:
        way = "min" if key.endswith("_ms") else "max"
    if way not in ("max", "min", "maximize", "minimize"):
        raise ValueError(f"--metric {text}: expected KEY:max or KEY:min")
    return Metric(key, "maximize" if way.startswith("max") else "minimize")


@dataclass(frozen=True)
class Objective:
    metrics: tuple[Metric, ...]
    slos: tuple[SLO, ...] = ()
    slo_percentile: str = "p99"  # which summary statistic an SLO bounds

    @property
    def directions(self) -> list[str]:
        return [m.direction for m in self.metrics]

    @property
    def is_multi(self) -> bool:
        return len(self.metrics) > 1

    def values(self, summary: dict[str, Any]) -> list[float]:
        return [metric_value(summary, m.key) for m in self.metrics]

    def constraints(self, summary: dict[str, Any]) -> list[float]:
        """Measured minus limit per SLO, in ms: <= 0 means the SLO holds."""
        return [float(summary.get(slo_key(s, self.slo_percentile), float("inf"))) - s.limit_s * 1000
                for s in self.slos]

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": [str(m) for m in self.metrics],
                "slos": [[s.metric, s.limit_s] for s in self.slos], "slo_percentile": self.slo_percentile}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Objective:
        return cls(tuple(parse_metric(m) for m in data["metrics"]),
                   tuple(SLO(m, float(v)) for m, v in data.get("slos", [])), data.get("slo_percentile", "p99"))


def slo_key(slo: SLO, percentile: str) -> str:
    return f"{percentile}_{slo.metric}_ms"


def metric_value(summary: dict[str, Any], key: str) -> float:
    value = summary.get(key)
    if value is None and key == "request_goodput":
        # loadgen leaves goodput empty without SLOs: every completed request counts.
        value = summary.get("request_throughput")
    if value is None:
        raise KeyError(f"metric {key!r} is not in the load summary; pick one of "
                       f"{', '.join(k for k, v in summary.items() if isinstance(v, (int, float)))}")
    return float(value)


def make_objective(preset: str | None, metrics: list[str], slos: tuple[SLO, ...],
                   percentile: str = "p99") -> Objective:
    if metrics:
        chosen = tuple(parse_metric(m) for m in metrics)
    else:
        if preset not in PRESETS:
            raise ValueError(f"--objective {preset}: expected one of {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
    return Objective(chosen, slos, percentile)
