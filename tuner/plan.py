"""`dyno plan`: how many replicas of a tuned config serve a target request rate within the SLOs.

Capacity per replica is the measured goodput of a trial (requests per second that met every
SLO, as loadgen counts it). With `--slo` the goodput is recomputed from the trial's per-request
records for these SLOs; otherwise the study's own measurement is used. The answer comes first
as one plain sentence, then a table of every complete trial.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from loadgen import REQUESTS_FILE, SLO, parse_slo, read_records, summarize
from tuner.study import load_study


@dataclass(frozen=True)
class Capacity:
    """What one replica of a trial's config delivered."""

    trial: int
    goodput: float  # req/s within the SLOs
    output_tokens_per_request: float


@dataclass(frozen=True)
class PlanRow:
    capacity: Capacity
    replicas: int | None  # None: this config met no request within the SLOs
    total_rps: float
    headroom: float  # total capacity over the target, minus one
    cost_per_hour: float | None
    cost_per_million_tokens: float | None


def capacity_of(trial: FrozenTrial, slos: tuple[SLO, ...]) -> Capacity | None:
    summary = trial.user_attrs.get("summary")
    if trial.state != TrialState.COMPLETE or not summary:
        return None
    completed = float(summary.get("completed") or 0)
    out_per_req = float(summary.get("total_output_tokens", 0)) / completed if completed else 0.0
    goodput = _recomputed(trial, slos) if slos else None
    if goodput is None:
        goodput = summary.get("request_goodput")
        goodput = summary.get("request_throughput", 0.0) if goodput is None else goodput
    return Capacity(trial.number, float(goodput), out_per_req)


def _recomputed(trial: FrozenTrial, slos: tuple[SLO, ...]) -> float | None:
    """Goodput for these SLOs from the trial's request records (mean over repeats)."""
    values = []
    for d in trial.user_attrs.get("result_dirs", []):
        path = Path(d) / REQUESTS_FILE
        if not path.exists():
            return None
        values.append(summarize(read_records(path), slos)["request_goodput"] or 0.0)
    return sum(values) / len(values) if values else None


def plan_row(cap: Capacity, rate: float, headroom: float, price: float | None) -> PlanRow:
    if cap.goodput <= 0:
        return PlanRow(cap, None, 0.0, 0.0, None, None)
    # Headroom: plan for rate * (1 + headroom) so a burst or a lost replica stays within the SLOs.
    replicas = max(1, math.ceil(rate * (1 + headroom) / cap.goodput - 1e-9))
    total = replicas * cap.goodput
    cost_h = replicas * price if price is not None else None
    tokens_h = rate * cap.output_tokens_per_request * 3600
    per_m = cost_h / tokens_h * 1e6 if cost_h is not None and tokens_h > 0 else None
    return PlanRow(cap, replicas, total, total / rate - 1, cost_h, per_m)


def pick(rows: list[PlanRow], trial: int | None) -> PlanRow | None:
    if trial is not None:
        return next((r for r in rows if r.capacity.trial == trial), None)
    fit = [r for r in rows if r.replicas is not None]
    return min(fit, key=lambda r: (r.replicas, -r.capacity.goodput)) if fit else None


def sentence(row: PlanRow | None, rate: float, slos: tuple[SLO, ...]) -> str:
    within = f" within {', '.join(map(str, slos))}" if slos else ""
    if row is None or row.replicas is None:
        return f"No tuned config served any request{within}; relax the SLOs or tune again."
    text = (f"To serve {rate:g} req/s{within}, run {row.replicas} replica{'s' * (row.replicas != 1)} of "
            f"trial {row.capacity.trial} ({row.capacity.goodput:.3g} req/s each, {row.total_rps:.3g} req/s "
            f"in all: {row.headroom:.0%} headroom over the target).")
    if row.cost_per_hour is not None:
        text += f" That costs ${row.cost_per_hour:.2f} per hour"
        text += (f", ${row.cost_per_million_tokens:.2f} per million output tokens."
                 if row.cost_per_million_tokens is not None else ".")
    return text


def table(rows: list[PlanRow], chosen: PlanRow | None) -> Table:
    t = Table(title="replicas per trial")
    for col in ("trial", "goodput req/s", "out tok/req", "replicas", "capacity req/s", "headroom",
                "$/h", "$/M out tok"):
        t.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: (r.replicas is None, r.replicas or 0, -r.capacity.goodput)):
        mark = " *" if r is chosen else ""
        money = (lambda v: "-" if v is None else f"{v:.2f}")
        t.add_row(f"{r.capacity.trial}{mark}", f"{r.capacity.goodput:.3g}", f"{r.capacity.output_tokens_per_request:.1f}",
                  "-" if r.replicas is None else str(r.replicas), f"{r.total_rps:.3g}",
                  "-" if r.replicas is None else f"{r.headroom:.0%}", money(r.cost_per_hour),
                  money(r.cost_per_million_tokens))
    return t


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyno plan", description="Replicas for a target request rate within "
                                "the SLOs, from a study's measured goodput per replica.")
    p.add_argument("--study-name", default="dyno")
    p.add_argument("--storage", default="sqlite:///dyno-tune.db")
    p.add_argument("--rate", type=float, required=True, help="target requests per second")
    p.add_argument("--slo", type=parse_slo, action="append", default=[], help="e.g. ttft=500ms (repeatable; "
                   "default: the study's)")
    p.add_argument("--headroom", type=float, default=0.2, help="spare capacity planned for (0.2 = 20%%)")
    p.add_argument("--cost-per-hour", type=float, help="price of one replica per hour")
    p.add_argument("--trial", type=int, help="plan for this trial (default: the fewest replicas)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.rate <= 0 or args.headroom < 0:
        print("dyno plan: --rate must be > 0 and --headroom >= 0", file=sys.stderr)
        return 2
    try:
        study = load_study(args.study_name, args.storage)
    except ValueError as e:
        print(f"dyno plan: {e}", file=sys.stderr)
        return 2
    slos = tuple(args.slo) or tuple(SLO(m, float(v)) for m, v in
                                    study.user_attrs.get("dyno", {}).get("objective", {}).get("slos", []))
    caps = [c for t in study.get_trials(deepcopy=False) if (c := capacity_of(t, slos)) is not None]
    rows = [plan_row(c, args.rate, args.headroom, args.cost_per_hour) for c in caps]
    chosen = pick(rows, args.trial)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(sentence(chosen, args.rate, slos), highlight=False, soft_wrap=True)
    if rows:
        console.print(table(rows, chosen))
    return 0 if chosen is not None and chosen.replicas is not None else 1
