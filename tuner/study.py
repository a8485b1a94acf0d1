"""The Optuna study: storage, sampler, the baseline trial, and the objective that runs trials.

A crashed server is a FAIL trial with its reason and log tail in user attrs (Optuna's `catch`),
never a crashed study. Storage is file-backed by default so a killed study resumes; any Optuna
storage URL lets several machines share one study.
"""

from __future__ import annotations


import json
import logging
import math
import os
import shlex
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import warnings

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from loadgen import BenchConfig
from loadgen.metrics import summarize
from tuner.engines import make_engine
from tuner.objectives import Objective
from tuner.space import Space, space_from_dict
from tuner.trial import TrialConfig, TrialFailed, TrialResult, TrialStopped, run_trial

log = logging.getLogger(__name__)

STUDY_ATTR = "dyno"  # study user attr holding what export and plan need to rebuild a config
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
PRUNE_STEPS = 4  # intermediate reports per load run: at 25%, 50% and 75% of it (100% is its end)


@dataclass
class StudyConfig:
    study_name: str
    storage: str
    space: Space
    objective: Objective
    bench: BenchConfig
    result_dir: Path
    n_trials: int = 10
    timeout_s: float | None = None
    repeats: int = 1
    engine: str = "dyno"
    seed: int | None = 0
    startup_timeout_s: float = 300.0
    prune: bool = True

    def describe(self) -> dict[str, Any]:
        """JSON-able record stored on the study (export and plan read it back)."""
        return {"space": self.space.to_dict(), "fixed": self.space.fixed,
                "objective": self.objective.to_dict(), "engine": self.engine,
                "bench": json.loads(json.dumps(self.bench.to_dict(), default=str)),
                "repeats": self.repeats, "result_dir": str(self.result_dir)}


def open_storage(url: str) -> str | optuna.storages.BaseStorage:
    """An Optuna storage from a URL; a path ending in .log/.journal is a journal file."""
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if "://" in url:
        # Heartbeats let a resumed study (or another worker) fail trials left RUNNING by a
        # killed process, and retry them once.
        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=30, grace_period=120,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    return RDBStorage(f"sqlite:///{url}")


def make_sampler(objective: Objective, seed: int | None) -> optuna.samplers.BaseSampler:
    # SLOs reach the samplers through trial.set_constraint (Optuna 5's constraints API).
    if objective.is_multi:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    # Few launches matter: TPE starts modelling after a handful of random trials.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)


def open_study(cfg: StudyConfig) -> optuna.Study:
    study = optuna.create_study(
        storage=open_storage(cfg.storage), study_name=cfg.study_name, load_if_exists=True,
        directions=cfg.objective.directions, sampler=make_sampler(cfg.objective, cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2) if cfg.prune else optuna.pruners.NopPruner())
    study.set_user_attr(STUDY_ATTR, cfg.describe())
    if not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        # The server's defaults run first, so every result is also a ratio to them.
        study.enqueue_trial(cfg.space.baseline(), user_attrs={"baseline": True}, skip_if_exists=True)
    return study


def trial_flags(space: Space, trial: optuna.Trial) -> dict[str, Any]:
    if trial.user_attrs.get("baseline"):
        # Only params whose default is in the space are suggested (they come back as
        # enqueued); the rest stay unset so the engine decides, as with no flags at all.
        keep = space.baseline()
        return {**space.fixed, **{p.name: p.suggest(trial) for p in space.params if p.name in keep}}
    return space.suggest(trial)


def mean_summary(result: TrialResult) -> dict[str, Any]:
    """Numbers averaged over repeats (vLLM's keys); the run config left out (it is on the study)."""
    first = result.summaries[0]
    out = {k: v for k, v in first.items() if k != "config" and not isinstance(v, (int, float))}
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = result.metric(key)
    return out


class TrialObjective:
    """The function Optuna calls: flags -> server + load -> objective values."""

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.engine = make_engine(cfg.engine)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        tc = self.prepare(trial)
        prunes = self.cfg.prune and not self.cfg.objective.is_multi
        try:
            result = run_trial(tc, on_repeat=lambda i, s: self._report(trial, i, s),
                               on_progress=(lambda i, pct, records: self._progress(trial, i, pct, records))
                               if prunes else None, progress_steps=PRUNE_STEPS)
        except TrialFailed as e:
            self.fail(trial, e)
            raise
        except TrialStopped as e:  # the pruner stopped the load; the server is already stopped
            raise optuna.TrialPruned(trial.user_attrs.get("prune_reason", e.reason)) from None
        return self.record(trial, result)

    def prepare(self, trial: optuna.Trial) -> TrialConfig:
        """The trial's flags and where its files go, recorded on the trial before it runs."""
        cfg = self.cfg
        flags = trial_flags(cfg.space, trial)
        workdir = cfg.result_dir / cfg.study_name / f"trial-{trial.number}"
        trial.set_user_attr("flags", flags)
        trial.set_user_attr("workdir", str(workdir))
        trial.set_user_attr("command", self.engine.shell(flags))
        # Several machines may share a study: say which one ran this trial.
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return TrialConfig(flags, cfg.bench, workdir, self.engine, cfg.repeats, cfg.startup_timeout_s)

    @staticmethod
    def fail(trial: optuna.Trial, error: TrialFailed) -> None:
        trial.set_user_attr("failure_reason", error.reason)
        trial.set_user_attr("log_tail", error.log_tail)

    def record(self, trial: optuna.Trial, result: TrialResult) -> float | list[float]:
        """Store what was measured; the objective value(s) and SLO constraints from the mean summary."""
        cfg = self.cfg
        trial.set_user_attr("launch", shlex.join(result.command))
        summary = mean_summary(result)
        trial.set_user_attr("summary", summary)
        trial.set_user_attr("spread", {m.key: result.spread(m.key) for m in cfg.objective.metrics})
        trial.set_user_attr("startup_s", result.startup_s)
        trial.set_user_attr("peak_rss_mb", result.peak_rss_mb)
        trial.set_user_attr("result_dirs", result.result_dirs)
        trial.set_user_attr("ran", [result.started_at, result.ended_at])
        constraints = cfg.objective.constraints(summary)
        trial.set_user_attr("constraints", constraints)
        for slo, value in zip(cfg.objective.slos, constraints):
            trial.set_constraint(str(slo), value)  # <= 0: the SLO holds
        values = cfg.objective.values(summary)
        return values if cfg.objective.is_multi else values[0]

    # Steps: 100 * repeat + percent of that repeat's load done (25, 50, 75 while it runs; 100 at
    # its end), so every trial of a study reports at the same steps and the median pruner compares
    # like with like. The value is the objective's metric over the requests finished so far.
    def _progress(self, trial: optuna.Trial, repeat: int, percent: int, records: list) -> str | None:
        summary = summarize(records, self.cfg.bench.slos)
        if not summary.get("completed"):
            return None  # nothing succeeded yet: no value to report
        return self._step(trial, 100 * repeat + percent, self.cfg.objective.values(summary)[0],
                          summary["completed"])

    def _report(self, trial: optuna.Trial, step: int, summary: dict[str, Any]) -> None:
        # Intermediate values only exist for one objective; the last repeat needs no pruning.
        if self.cfg.objective.is_multi or not self.cfg.prune or step + 1 >= self.cfg.repeats:
            return
        reason = self._step(trial, 100 * (step + 1), self.cfg.objective.values(summary)[0],
                            summary.get("completed", 0))
        if reason:
            trial.set_user_attr("pruned_at_repeat", step)
            raise optuna.TrialPruned(reason)

    def _step(self, trial: optuna.Trial, step: int, value: float, completed: int) -> str | None:
        """Report one intermediate value; a reason to stop when the pruner says so (recorded on the
        trial). The baseline is never pruned: every result is also a ratio to it."""
        trial.report(value, step)
        intermediate = [*trial.user_attrs.get("intermediate", []), [step, value, completed]]
        trial.set_user_attr("intermediate", intermediate)
        if trial.user_attrs.get("baseline") or not trial.should_prune():
            return None
        metric = self.cfg.objective.metrics[0].key
        reason = f"pruned at step {step}: {metric} {value:.4g} after {completed} requests (median pruner)"
        trial.set_user_attr("pruned_at_step", step)
        trial.set_user_attr("prune_reason", reason)
        return reason


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_study(cfg: StudyConfig, progress: Callable[[optuna.Study, FrozenTrial], None] | None = None,
              executor: Executor | None = None) -> optuna.Study:
    """Run until the study holds cfg.n_trials finished trials (a resumed study does the rest)."""
    study = open_study(cfg)
    remaining = cfg.n_trials - finished(study)
    if remaining > 0:
        (executor or LocalExecutor()).run(study, TrialObjective(cfg), remaining, cfg, progress)
    return study


class Executor(ABC):
    """Where trials run."""

    @abstractmethod
    def run(self, study: optuna.Study, objective: TrialObjective, n_trials: int, cfg: StudyConfig,
            progress: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        """Run n_trials more trials of the study."""


class LocalExecutor(Executor):
    """One trial after another on this machine: Optuna's own optimize loop."""

    def run(self, study, objective, n_trials, cfg, progress) -> None:
        # The total, not this run's count: workers sharing a study stop together.
        callbacks: list = [MaxTrialsCallback(cfg.n_trials, states=FINISHED)]
        if progress is not None:
            callbacks.append(progress)
        study.optimize(objective, n_trials=n_trials, timeout=cfg.timeout_s, catch=(TrialFailed,),
                       callbacks=callbacks, gc_after_trial=True)


def load_study(study_name: str, storage: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(f"no study {study_name!r} in {storage}; run `dyno tune --study-name "
                         f"{study_name} --storage {storage}` first") from None


def study_record(study: optuna.Study) -> dict[str, Any]:
    return study.user_attrs.get(STUDY_ATTR, {})


def study_space(study: optuna.Study) -> Space:
    rec = study_record(study)
    return space_from_dict(rec["space"]) if rec.get("space") else Space((), {})


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("baseline")), None)


def feasible(trial: FrozenTrial) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", []))


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best feasible complete trial; for a Pareto front, the one best on the first metric."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if feasible(t)]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no complete trial within its SLOs")
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(done, key=lambda t: sign * t.values[0])


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise ValueError(f"study {study.study_name!r} has no trial {number}")


def eta_s(study: optuna.Study, n_trials: int, started: float, timeout_s: float | None) -> float:
    """Time left: mean trial duration times trials left, capped by the timeout."""
    done = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.duration]
    if not done:
        return math.nan
    mean = sum(t.duration.total_seconds() for t in done) / len(done)
    left = max(0, n_trials - len(done)) * mean
    if timeout_s is not None:
        left = min(left, max(0.0, timeout_s - (time.monotonic() - started)))
    return left


