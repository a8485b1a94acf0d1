"""Length distributions for synthetic prompts and outputs.

Spec strings: `512` or `fixed:512`, `uniform:256,768`, `normal:512,64` (mean, std),
`lognormal:512,0.5` (median, sigma of the log), `hist:128=0.5,512=0.3,2048=0.2` (an
empirical histogram: value=weight pairs). Samples are integers of at least 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("fixed", "uniform", "normal", "lognormal", "hist")


class LengthSpecError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LengthDist:
    kind: str
    params: tuple[float, ...]
    weights: tuple[float, ...] = ()

    @classmethod
    def parse(cls, spec: str | int) -> LengthDist:
        text = str(spec).strip()
        kind, _, rest = text.partition(":") if ":" in text else ("fixed", "", text)
        if kind not in KINDS:
            raise LengthSpecError(f"length {text!r}: kind must be one of {', '.join(KINDS)}")
        try:
            if kind == "hist":
                pairs = [p.split("=") for p in rest.split(",")]
                return cls(kind, tuple(float(v) for v, _ in pairs), tuple(float(w) for _, w in pairs))
            params = tuple(float(x) for x in rest.split(","))
        except ValueError as e:
            raise LengthSpecError(f"length {text!r}: expected numbers, e.g. uniform:256,768") from e
        expected = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}[kind]
        if len(params) != expected:
            raise LengthSpecError(f"length {text!r}: {kind} takes {expected} number(s)")
        return cls(kind, params)

    @classmethod
    def vllm_random(cls, length: int, range_ratio: float) -> LengthDist:
        """vLLM's --random-*-len with --random-range-ratio: uniform on len * [1 - r, 1 + r]."""
        if range_ratio <= 0:
            return cls("fixed", (float(length),))
        return cls("uniform", (length * (1 - range_ratio), length * (1 + range_ratio)))

    @property
    def mean(self) -> float:
        if self.kind == "hist":
            return float(np.average(self.params, weights=self.weights))
        if self.kind == "uniform":
            return sum(self.params) / 2
        if self.kind == "lognormal":
            return self.params[0] * float(np.exp(self.params[1] ** 2 / 2))
        return self.params[0]

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        p = self.params
        if self.kind == "fixed":
            x = np.full(n, p[0])
        elif self.kind == "uniform":
            x = rng.uniform(p[0], p[1] + 1, n)  # inclusive of the upper bound after floor
        elif self.kind == "normal":
            x = rng.normal(p[0], p[1], n)
        elif self.kind == "lognormal":
            x = rng.lognormal(np.log(p[0]), p[1], n)
        else:
            w = np.asarray(self.weights) / sum(self.weights)
            x = rng.choice(np.asarray(p), size=n, p=w)
        return [max(1, int(v)) for v in np.floor(x)]
