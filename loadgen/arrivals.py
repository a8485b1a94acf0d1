"""Load shapes (after GuideLLM's strategies): closed loop at a concurrency, or open loop where
requests are due at times drawn from an arrival process, whatever the server's pace.

Open-loop processes give the intended send offsets from the start of the point:
- constant: every 1/rate seconds;
- poisson: exponential gaps of mean 1/rate (vLLM's default for a finite --request-rate);
- gamma: gaps ~ Gamma(shape=burstiness, scale=1/(rate*burstiness)), vLLM's --burstiness:
  below 1 burstier than Poisson, above 1 smoother, the mean rate unchanged;
- rate = inf: everything at once (GuideLLM's "throughput").
The first request is due at 0, as in vLLM.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

ARRIVALS = ("poisson", "constant", "gamma")


class LoadShapeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One load level: `concurrency` (closed loop) or `rate` (open loop, req/s)."""

    concurrency: int | None = None
    rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None  # open loop: at most this many in flight (vLLM's cap)

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise LoadShapeError("a load point is either a concurrency or a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise LoadShapeError(f"concurrency {self.concurrency}: must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise LoadShapeError(f"request rate {self.rate:g}: must be > 0 (inf sends all at once)")
        if self.arrival not in ARRIVALS:
            raise LoadShapeError(f"arrival {self.arrival!r}: choose one of {', '.join(ARRIVALS)}")
        if not self.burstiness > 0:
            raise LoadShapeError(f"burstiness {self.burstiness:g}: must be > 0")

    @property
    def is_closed(self) -> bool:
        return self.concurrency is not None

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"concurrency={self.concurrency}"
        cap = f",max_concurrency={self.max_concurrency}" if self.max_concurrency else ""
        return f"rate={self.rate:g}{cap}"

    @property
    def process(self) -> str:
        return "gamma" if self.burstiness != 1.0 else self.arrival

    @property
    def max_in_flight(self) -> int | None:
        """How many requests this shape can have open at once (None: no bound)."""
        return self.concurrency if self.concurrency is not None else self.max_concurrency


def arrival_offsets(point: LoadPoint, rng: np.random.Generator) -> Iterator[float]:
    """Intended send offsets in seconds from the start, endless, non-decreasing."""
    assert point.rate is not None, "closed-loop points have no arrival times"
    if math.isinf(point.rate):
        return itertools.repeat(0.0)
    return itertools.accumulate(_gaps(point, rng), initial=0.0)


def _gaps(point: LoadPoint, rng: np.random.Generator, batch: int = 1024) -> Iterator[float]:
    rate = float(point.rate or 0)
    while True:
        if point.process == "constant":
            yield from itertools.repeat(1.0 / rate, batch)
        elif point.process == "poisson":
            yield from rng.exponential(1.0 / rate, batch).tolist()
        else:
            shape = point.burstiness
            yield from rng.gamma(shape, 1.0 / (rate * shape), batch).tolist()
