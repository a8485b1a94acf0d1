"""Tuning from the dashboard: start a study as `dyno tune` does (tuner.run_study in a worker
thread, a callback per finished trial) or open one from its storage; the trials as plain rows
for the table and the Pareto chart; export of a trial as `dyno export` writes it."""

from __future__ import annotations

import contextlib
import io
import math
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial

from loadgen import BenchConfig, DatasetConfig, LoadPoint
from tuner import PRESETS, StudyConfig, default_space, load_study, make_objective, run_study
from tuner.cli import fixed_flags
from tuner.export import FORMATS, SUFFIX, ExportConfig, chosen, render
from tuner.study import open_storage

__all__ = ["FORMATS", "SUFFIX", "TunePlan", "TuneRunner", "TrialRow", "export_text", "export_to_file",
           "pareto_front", "study_names", "trial_rows"]


@dataclass(frozen=True)
class TunePlan:
    """The Tune form: the study, its objective, the load each trial gets, fixed server flags."""

    study_name: str
    storage: str
    result_dir: Path
    n_trials: int = 6
    objective: str = "throughput"
    num_prompts: int = 32
    input_len: int = 128
    output_len: int = 32
    concurrency: int = 8
    server_flags: str = "--max-model-len 512"  # as typed after `dyno tune --`
    seed: int = 0


def study_config(plan: TunePlan) -> StudyConfig:
    """What `dyno tune` builds from its flags; bad server flags raise the engine's own errors."""
    if plan.objective not in PRESETS:
        raise ValueError(f"objective {plan.objective!r}: choose one of {', '.join(PRESETS)}")
    fixed = server_flags(plan.server_flags)
    bench = BenchConfig(dataset=DatasetConfig(input_len=f"fixed:{plan.input_len}",
                                              output_len=f"fixed:{plan.output_len}", seed=plan.seed),
                        points=(LoadPoint(concurrency=plan.concurrency),), num_prompts=plan.num_prompts,
                        warmup=2, seed=plan.seed, scrape_interval_s=1.0, request_timeout_s=120.0)
    return StudyConfig(plan.study_name, plan.storage, default_space(fixed), make_objective(plan.objective, [], ()),
                       bench, plan.result_dir, plan.n_trials, seed=plan.seed)


def server_flags(text: str) -> dict[str, Any]:
    """Fixed server flags through the engine's own parser; argparse's complaint (written to
    stderr, which would scribble over the dashboard) becomes a one-line ValueError."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fixed_flags(shlex.split(text), None)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        reason = lines[-1].split("error: ", 1)[-1] if lines else "see `dyno serve --help`"
        raise ValueError(f"server flags: {reason}") from None


@dataclass
class TuneRunner:
    """One study run. `run()` blocks (a thread worker calls it); `stop()` ends it after the
    trial in progress (Optuna's study.stop from the per-trial callback)."""

    config: StudyConfig
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials show in the table
        return run_study(self.config, self._progress)

    def _progress(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.on_trial is not None:
            self.on_trial(study, trial)
        if self._stop.is_set():
            study.stop()


def open_existing(storage: str, study_name: str) -> optuna.Study:
    """The study; when it is not there, the error names the studies that are."""
    try:
        return load_study(study_name, storage)
    except ValueError as e:
        try:
            names = study_names(storage)
        except Exception:  # noqa: BLE001 - the storage itself is unreadable: the first error says enough
            raise e from None
        there = ", ".join(names) if names else "none"
        raise ValueError(f"no study {study_name!r} in {storage} (studies there: {there})") from None


def study_names(storage: str) -> list[str]:
    return optuna.study.get_all_study_names(storage=open_storage(storage))


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    params: str
    throughput: float | None  # output tokens/s of the trial's load (mean over repeats)
    latency_ms: float | None  # TTFT p99 of the trial's load
    values: tuple[float, ...]
    reason: str
    is_baseline: bool
    flags: dict[str, Any]


def _params(trial: FrozenTrial) -> str:
    text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return text or "server defaults"


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        summary = t.user_attrs.get("summary") or {}
        reason = t.user_attrs.get("failure_reason") or t.user_attrs.get("prune_reason") or ""
        rows.append(TrialRow(t.number, t.state.name, _params(t), summary.get("output_throughput"),
                             summary.get("p99_ttft_ms"), tuple(t.values or ()), reason,
                             bool(t.user_attrs.get("baseline")), dict(t.user_attrs.get("flags") or {})))
    return rows


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Complete trials no other beats on both throughput (higher) and TTFT p99 (lower)."""
    points = [r for r in rows if r.state == "COMPLETE" and r.throughput is not None and r.latency_ms is not None]

    def dominated(r: TrialRow) -> bool:
        return any(o.throughput >= r.throughput and o.latency_ms <= r.latency_ms
                   and (o.throughput > r.throughput or o.latency_ms < r.latency_ms) for o in points)

    return sorted((r for r in points if not dominated(r)), key=lambda r: r.latency_ms)


def export_config(storage: str, study_name: str, trial: int) -> ExportConfig:
    """The trial's config exactly as `dyno export --trial N` builds it."""
    flags, number, metrics = chosen(storage, study_name, trial)
    return ExportConfig(flags, study_name, number, metrics)


def export_text(storage: str, study_name: str, trial: int, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return render(export_config(storage, study_name, trial), fmt)


def export_to_file(storage: str, study_name: str, trial: int, fmt: str, path: Path) -> Path:
    """One format to the file `path`, or ("all", as `dyno export --format all`) every format
    into the folder `path`, each under its usual name."""
    if fmt == "all":
        cfg = export_config(storage, study_name, trial)
        path.mkdir(parents=True, exist_ok=True)
        for each in FORMATS:
            (path / SUFFIX[each]).write_text(render(cfg, each))
        return path
    text = export_text(storage, study_name, trial, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fmt_number(value: float | None, digits: str = ".4g") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)
