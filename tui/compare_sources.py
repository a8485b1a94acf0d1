"""What the Compare screen can put side by side, and how each side gets its summary:
- a server: the workload runs against it (a loadgen run, saved like `dyno bench`'s);
- a saved result dir: its last load point, read;
- a config (a study's trial): launched as the tuner launches a trial (tuner.run_trial: its own
  server on a free port, the workload, the server stopped), so two configs meet the same load."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from tuner import TrialConfig, make_engine, run_trial
from tui.bench_runner import BenchPlan, BenchRunner, bench_config, result_dir_for
from tui.reports_scan import find_result_dirs, find_storages, read_result_dir
from tui.tune_runner import open_existing


@dataclass(frozen=True)
class Source:
    label: str
    base_url: str | None = None
    api_key: str | None = None
    path: Path | None = None
    flags: dict[str, Any] | None = None

    @property
    def needs_workload(self) -> bool:
        return self.path is None


@dataclass
class Stops:
    """Lets the screen end the runs in progress (the app's exit waits for worker threads)."""

    event: threading.Event = field(default_factory=threading.Event)
    runners: list[BenchRunner] = field(default_factory=list)

    def stop(self) -> None:
        self.event.set()
        for runner in self.runners:
            runner.stop("the dashboard is closing")

    def reason(self) -> str | None:
        return "the dashboard is closing" if self.event.is_set() else None


def run_side(source: Source, plan: BenchPlan | None, results_dir: Path, side: str, stops: Stops) -> dict[str, Any]:
    """One side's summary (blocking: call it from a thread worker)."""
    if source.path is not None:
        found = read_result_dir(source.path)
        if found.problem or not found.points:
            raise ValueError(f"{source.path}: {found.problem or 'no load point in its summary'}")
        return found.last
    assert plan is not None
    if source.flags is not None:
        workdir = result_dir_for(results_dir, f"compare-{side}-config")
        config = TrialConfig(dict(source.flags), bench_config(plan, None), workdir, make_engine("dyno"))
        return run_trial(config, on_progress=lambda i, pct, records: stops.reason()).summaries[0]
    runner = BenchRunner(dataclasses.replace(plan, base_url=source.base_url, api_key=source.api_key),
                         result_dir_for(results_dir, f"compare-{side}"))
    stops.runners.append(runner)
    result = runner.run()
    if result.stopped:
        raise RuntimeError(f"{side} stopped early: {result.stopped}")
    return result.summary


def saved_sources(root: Path) -> dict[str, Source]:
    """Result dirs and the complete trials of the studies under root (reads files: off the UI thread)."""
    sources = {}
    for d in find_result_dirs(root):
        if d.points:
            name = str(d.path.relative_to(root)) if d.path.is_relative_to(root) else str(d.path)
            sources[f"dir:{d.path}"] = Source(name, path=d.path)
    for storage in find_storages(root):
        for name in storage.studies:
            try:
                study = open_existing(storage.url, name)
            except ValueError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.user_attrs.get("flags"):
                    params = " ".join(f"{k}={v}" for k, v in t.params.items()) or "server defaults"
                    sources[f"trial:{storage.url}:{name}:{t.number}"] = Source(
                        f"config: {name} #{t.number} ({params})", flags=dict(t.user_attrs["flags"]))
    return sources
