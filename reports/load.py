"""Result files and studies -> tidy pandas DataFrames. The only module of reports that reads
files; it reads runs through loadgen's public schema names and studies through Optuna.

    runs = load_runs(["results/dyno", "results/vllm"])
    runs.requests    # one row per request: run, point, ttft_ms, tpot_ms, e2el_ms, ...
    runs.latencies   # long form: run, point, metric (ttft|tpot|itl|e2el), ms (ITL: one row per gap)
    runs.points      # one row per (run, load point): loadgen's summary keys + x/x_label
    runs.server      # server /metrics over time: run, point, t_s, metric, value
    runs.timeline    # per run and second: in_flight requests, output tokens/s
    runs.problems    # one line per thing that could not be read
    trials = load_study("sqlite:///dyno-tune.db", "dyno")   # one row per trial
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from loadgen import REQUESTS_FILE, SERVER_METRICS_FILE, SUMMARY_FILE, read_records, read_summary

log = logging.getLogger(__name__)

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")

# Server gauges/counters the time series plot draws (vLLM's names, which dyno's server also uses).
SERVER_SERIES = {
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "generation_tokens_total": "vllm:generation_tokens_total",
}

_SLO = re.compile(r"^(\w+)<=([0-9.eE+-]+)ms$")


@dataclass
class Runs:
    """Everything read from one or more `dyno bench` result directories."""

    requests: pd.DataFrame
    latencies: pd.DataFrame
    points: pd.DataFrame
    server: pd.DataFrame
    timeline: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.points.get("run", []), *self.requests.get("run", [])]))


REQUEST_COLUMNS = ["run", "point", "request_id", "index", "is_warmup", "ok", "error_kind", "send_s",
                   "end_s", "input_tokens", "output_tokens", "ttft_ms", "tpot_ms", "e2el_ms"]
LATENCY_COLUMNS = ["run", "point", "metric", "ms"]
SERVER_COLUMNS = ["run", "point", "t_s", "metric", "value"]
TIMELINE_COLUMNS = ["run", "t_s", "in_flight", "output_tokens_per_s"]


def _ms(value: float | None) -> float:
    return float("nan") if value is None else value * 1000.0


def _unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        name = p.name or str(p)
        base, n = name, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


def load_runs(paths: Iterable[str | Path]) -> Runs:
    """Read each result directory; what cannot be read becomes one line in `problems`, and the
    rest is still loaded (a run with a summary but no records still has its load points)."""
    paths = [Path(p) for p in paths]
    requests, latencies, points, server, timeline, problems = [], [], [], [], [], []
    for path, name in zip(paths, _unique_names(paths)):
        if not path.is_dir():
            problems.append(f"{path}: no such result directory")
            continue
        t0 = None
        rec_file = path / REQUESTS_FILE
        if rec_file.exists():
            records = read_records(rec_file)
            if not records:
                problems.append(f"{path}: {REQUESTS_FILE} has no requests (empty run)")
            else:
                t0 = min(r.scheduled_time for r in records)
                req, lat = _request_frames(name, records, t0)
                requests.append(req)
                latencies.append(lat)
                timeline.append(_timeline(name, records, t0))
        else:
            problems.append(f"{path}: missing {REQUESTS_FILE}; latency distributions and time series left out")
        sum_file = path / SUMMARY_FILE
        if sum_file.exists():
            try:
                summary = read_summary(path)
            except (ValueError, json.JSONDecodeError) as e:
                problems.append(f"{path}: cannot read {SUMMARY_FILE}: {e}")
            else:
                if summary.get("points"):
                    points.append(_points_frame(name, summary["points"]))
                else:
                    problems.append(f"{path}: {SUMMARY_FILE} has no load points")
        else:
            problems.append(f"{path}: missing {SUMMARY_FILE}; load curves and comparisons left out")
        met_file = path / SERVER_METRICS_FILE
        if met_file.exists():
            frame = _server_frame(name, met_file, t0)
            if frame.empty:
                problems.append(f"{path}: {SERVER_METRICS_FILE} has no samples")
            else:
                server.append(frame)
    return Runs(requests=_concat(requests, REQUEST_COLUMNS), latencies=_concat(latencies, LATENCY_COLUMNS),
                points=_concat(points, ["run", "point", "x", "x_label"]),
                server=_concat(server, SERVER_COLUMNS), timeline=_concat(timeline, TIMELINE_COLUMNS),
                problems=problems)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _request_frames(name: str, records: list, t0: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, lat = [], []
    for r in records:
        rows.append({"run": name, "point": r.point, "request_id": r.request_id, "index": r.index,
                     "is_warmup": r.is_warmup, "ok": r.ok, "error_kind": r.error_kind,
                     "send_s": float("nan") if r.send_time is None else r.send_time - t0,
                     "end_s": float("nan") if r.end_time is None else r.end_time - t0,
                     "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                     "ttft_ms": _ms(r.ttft), "tpot_ms": _ms(r.tpot), "e2el_ms": _ms(r.e2el)})
        if r.is_warmup or not r.ok:
            continue
        for metric in ("ttft", "tpot", "e2el"):
            value = getattr(r, metric)
            if value is not None:
                lat.append((name, r.point, metric, value * 1000.0))
        lat.extend((name, r.point, "itl", gap * 1000.0) for gap in r.itl)
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS), pd.DataFrame(lat, columns=LATENCY_COLUMNS)


def _timeline(name: str, records: list, t0: float, bin_s: float = 1.0) -> pd.DataFrame:
    """Requests in flight (sampled at each bin's start) and output tokens per second, per bin."""
    spans = [(r.send_time - t0, (r.end_time or r.send_time) - t0) for r in records if r.send_time is not None]
    if not spans:
        return pd.DataFrame(columns=TIMELINE_COLUMNS)
    end = max(e for _, e in spans)
    edges = np.arange(0, int(end // bin_s) + 1) * bin_s
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    in_flight = [int(((starts <= t) & (ends > t)).sum()) for t in edges]
    tokens = np.zeros(len(edges))
    for r in records:
        if not r.ok:
            continue
        counts = r.chunk_tokens if len(r.chunk_tokens) == len(r.chunk_times) else [1] * len(r.chunk_times)
        for t, k in zip(r.chunk_times, counts):
            tokens[min(int((t - t0) // bin_s), len(edges) - 1)] += k
    return pd.DataFrame({"run": name, "t_s": edges, "in_flight": in_flight,
                         "output_tokens_per_s": tokens / bin_s})


def _points_frame(name: str, points: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{k: v for k, v in p.items() if not isinstance(v, (dict, list))} for p in points]
    frame = pd.DataFrame(rows)
    frame.insert(0, "run", name)
    if "point" not in frame:
        frame["point"] = [f"point {i}" for i in range(len(frame))]
    frame["slos"] = [";".join(p.get("slos") or []) for p in points]
    x, label = _load_axis(frame)
    frame["x"], frame["x_label"] = x, label
    return frame


def _load_axis(frame: pd.DataFrame) -> tuple[list[float], str]:
    """The offered load of each point: concurrency for closed loops, rate for open ones."""
    def column(key: str) -> pd.Series:
        return pd.to_numeric(frame[key], errors="coerce") if key in frame else pd.Series([np.nan] * len(frame))
    conc, rate = column("concurrency"), column("request_rate")
    if conc.notna().all():
        return conc.tolist(), "concurrency (requests in flight)"
    if (rate.notna() & np.isfinite(rate)).all():
        return rate.tolist(), "offered rate (requests/s)"
    return list(range(len(frame))), "load point (index)"


def parse_slos(text: str) -> dict[str, float]:
    """'ttft<=500ms;tpot<=50ms' (loadgen's SLO strings) -> {'ttft': 500.0, 'tpot': 50.0}."""
    out: dict[str, float] = {}
    for part in filter(None, (text or "").split(";")):
        m = _SLO.match(part.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def _server_frame(name: str, path: Path, t0: float | None) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(sample, dict) or "time" not in sample:
                continue
            values = sample.get("values") or {}
            for short, metric in SERVER_SERIES.items():
                hits = [v for k, v in values.items() if k == metric or k.startswith(metric + "{")]
                if hits:
                    rows.append((name, sample.get("point", ""), sample["time"], short, float(sum(hits))))
    frame = pd.DataFrame(rows, columns=SERVER_COLUMNS)
    if not frame.empty:
        frame["t_s"] = frame["t_s"] - (t0 if t0 is not None else frame["t_s"].min())
        # Counters become rates: generation tokens per second between samples.
        gen = frame[frame.metric == "generation_tokens_total"].sort_values("t_s")
        if len(gen) > 1:
            rate = gen.assign(metric="generation_tokens_per_s",
                              value=gen["value"].diff() / gen["t_s"].diff()).iloc[1:]
            frame = pd.concat([frame, rate], ignore_index=True)
    return frame


# ---------------------------------------------------------------------------------------------
# Studies


def load_study(storage: str, name: str) -> pd.DataFrame:
    """One row per trial: number, state, value_0.. (one per objective), param_<flag>.., the
    tuner's user attrs (baseline, failure_reason, startup_s, peak_rss_mb), feasible, pareto and
    chosen. `df.attrs` holds the study's name, directions, metric names, and `problems`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=_storage(storage))
    except KeyError:
        raise ValueError(f"no study {name!r} in {storage}; check --study-name and --storage") from None
    return study_frame(study)


def _storage(url: str) -> Any:
    if url.endswith((".log", ".journal")) and "://" not in url:  # the tuner's journal-file form
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(url))
    return url


def study_frame(study: Any) -> pd.DataFrame:
    import optuna
    from optuna.trial import TrialState

    directions = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize"
                  for d in study.directions]
    dyno = study.user_attrs.get("dyno") or {}
    metrics = [m.split(":")[0] for m in (dyno.get("objective") or {}).get("metrics", [])]
    if len(metrics) != len(directions):
        metrics = [f"objective {i}" for i in range(len(directions))]
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name,
                               "baseline": bool(attrs.get("baseline", False)),
                               "failure_reason": attrs.get("failure_reason"),
                               "startup_s": attrs.get("startup_s"),
                               "peak_rss_mb": attrs.get("peak_rss_mb", attrs.get("peak_rss_mib")),
                               "duration_s": t.duration.total_seconds() if t.duration else None,
                               "feasible": all(c <= 0 for c in attrs.get("constraints", []))}
        values = t.values if t.state == TrialState.COMPLETE and t.values else [None] * len(directions)
        for i, v in enumerate(values):
            row[f"value_{i}"] = v
        for k, v in t.params.items():
            row[f"param_{k}"] = v
        rows.append(row)
    frame = pd.DataFrame(rows)
    problems: list[str] = []
    if frame.empty:
        problems.append(f"study {study.study_name!r} has no trials")
        frame = pd.DataFrame(columns=["number", "state", "feasible", "value_0"])
    frame["pareto"] = False
    frame["chosen"] = False
    done = frame[(frame.state == "COMPLETE") & frame.feasible.astype(bool)] if len(frame) else frame
    if len(frame) and done.empty:
        states = ", ".join(f"{n} {s}" for s, n in frame.state.value_counts().items())
        problems.append(f"study {study.study_name!r} has no complete trial within its SLOs ({states}); "
                        "history and failures still shown")
    if not done.empty:
        signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
        vals = done[[f"value_{i}" for i in range(len(directions))]].to_numpy(float) * signs
        front = [i for i in range(len(vals))
                 if not any((vals[j] >= vals[i]).all() and (vals[j] > vals[i]).any() for j in range(len(vals)))]
        frame.loc[done.index[front], "pareto"] = True
        frame.loc[done.index[int(np.argmax(vals[:, 0]))], "chosen"] = True
    frame.attrs.update({"study_name": study.study_name, "directions": directions, "metrics": metrics,
                        "problems": problems, "importances": _importances(study, frame)})
    return frame


def _importances(study: Any, frame: pd.DataFrame, min_trials: int = 4) -> dict[str, Any]:
    """Importances of the parameters for the first objective (fANOVA when scikit-learn is
    installed, else Optuna's PED-ANOVA), or a note saying why there are none."""
    import optuna

    params = [c[len("param_"):] for c in frame.columns if c.startswith("param_")]
    done = int((frame.state == "COMPLETE").sum()) if len(frame) else 0
    if done < min_trials or not params:
        return {"note": f"parameter importances need at least {min_trials} complete trials with "
                        f"parameters; this study has {done}", "values": {}}
    try:
        import sklearn  # noqa: F401

        evaluator, method = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    except ImportError:
        evaluator, method = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    try:
        # PED-ANOVA ranks what makes the target low: a maximized objective is negated.
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                             target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError, ImportError) as e:
        return {"note": f"parameter importances not computed: {e}", "values": {}}
    return {"note": "", "method": method, "values": {k: float(v) for k, v in values.items()}}


def finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out
