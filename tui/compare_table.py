"""Two summaries side by side: each key metric for A and B, and B - A (absolute and %)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tui.bench_summary import KEY_METRICS


@dataclass(frozen=True)
class CompareRow:
    key: str
    name: str
    a: float | None
    b: float | None

    @property
    def diff(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def pct(self) -> float | None:
        """B relative to A in percent; None when A is 0 or missing."""
        return None if self.diff is None or not self.a else self.diff / abs(self.a) * 100.0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[CompareRow]:
    return [CompareRow(key, name, _number(a.get(key)), _number(b.get(key))) for key, name, _ in KEY_METRICS]


def signed(value: float | None, pattern: str = "{:+.2f}") -> str:
    return "-" if value is None else pattern.format(value)
