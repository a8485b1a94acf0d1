"""Factories: result directories and studies with known numbers, written through loadgen's
public schema names and Optuna."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from loadgen import (REQUESTS_FILE, SCHEMA_VERSION, SERVER_METRICS_FILE, SUMMARY_FILE, RecordWriter,
                     RequestRecord, write_json)

T0 = 100.0


def create_records() -> list[RequestRecord]:
    """Two good requests (TTFT 100/200 ms, TPOT 100/200 ms, E2EL 300/600 ms), one failed, one
    warm-up."""
    return [
        RequestRecord("w", "concurrency=1", 0, True, T0, send_time=T0, first_token_time=T0 + 0.05,
                      chunk_times=[T0 + 0.05], chunk_tokens=[1], end_time=T0 + 0.06, output_tokens=1),
        RequestRecord("r0", "concurrency=1", 1, False, T0, send_time=T0, first_token_time=T0 + 0.1,
                      chunk_times=[T0 + 0.1, T0 + 0.2, T0 + 0.3], chunk_tokens=[1, 1, 1],
                      end_time=T0 + 0.35, input_tokens=10, output_tokens=3, status=200),
        RequestRecord("r1", "concurrency=1", 2, False, T0 + 1, send_time=T0 + 1, first_token_time=T0 + 1.2,
                      chunk_times=[T0 + 1.2, T0 + 1.6], chunk_tokens=[1, 2], end_time=T0 + 1.65,
                      input_tokens=20, output_tokens=3, status=200),
        RequestRecord("r2", "concurrency=1", 3, False, T0 + 2, send_time=T0 + 2, end_time=T0 + 2.1,
                      status=500, error_kind="http", error="boom"),
    ]


def point(conc: int, tput: float, ttft: float) -> dict:
    return {"schema_version": SCHEMA_VERSION, "point": f"concurrency={conc}", "concurrency": conc,
            "request_rate": None, "completed": 2, "failed": 1, "duration": 2.0,
            "output_throughput": tput, "request_throughput": tput / 10,
            "median_ttft_ms": ttft, "p99_ttft_ms": 2 * ttft, "median_tpot_ms": 10.0, "p99_tpot_ms": 20.0,
            "median_e2el_ms": 5 * ttft, "p99_e2el_ms": 10 * ttft, "slos": ["ttft<=500ms"],
            "failed_by_kind": {"http": 1}}


def write_run(root: Path, name: str, tputs=(10.0, 19.0, 19.5), ttfts=(100.0, 200.0, 400.0),
              records=True, summary=True, server=True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if records:
        w = RecordWriter(d / REQUESTS_FILE)
        for r in create_records():
            w.append(r)
        w.close()
    if summary:
        write_json(d / SUMMARY_FILE, {"schema_version": SCHEMA_VERSION, "run_id": name, "config": {},
                                      "warnings": [], "points": [point(c, t, f) for c, t, f in
                                                                 zip((1, 2, 4), tputs, ttfts)]})
    if server:
        with open(d / SERVER_METRICS_FILE, "w") as f:
            for i, (run, wait, kv, gen) in enumerate([(1, 0, 0.1, 0), (2, 1, 0.5, 10), (0, 0, 0.2, 30)]):
                values = {'vllm:num_requests_running{model_name="m"}': run,
                          'vllm:num_requests_waiting{model_name="m"}': wait,
                          'vllm:kv_cache_usage_perc{model_name="m"}': kv,
                          'vllm:generation_tokens_total{model_name="m"}': gen}
                f.write(json.dumps({"time": T0 + i, "point": "concurrency=1", "values": values}) + "\n")
    return d


@pytest.fixture
def run_a(tmp_path) -> Path:
    return write_run(tmp_path, "a")


@pytest.fixture
def run_b(tmp_path) -> Path:
    return write_run(tmp_path, "b", tputs=(20.0, 40.0, 41.0), ttfts=(50.0, 100.0, 200.0))


def create_study(storage: str, name: str = "dyno", failed_only: bool = False) -> optuna.Study:
    """Two objectives (throughput max, p99 TTFT min) over max-num-seqs and kv-cache-dtype."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    study.set_user_attr("dyno", {"objective": {"metrics": ["output_throughput:max", "p99_ttft_ms:min"]}})
    dists = {"max-num-seqs": optuna.distributions.IntDistribution(1, 128),
             "kv-cache-dtype": optuna.distributions.CategoricalDistribution(["auto", "fp8"])}
    trials = [] if failed_only else [(8, "auto", (100.0, 50.0)), (16, "auto", (150.0, 80.0)),
                                     (32, "fp8", (140.0, 90.0)), None, (64, "fp8", (200.0, 200.0)),
                                     (4, "auto", (90.0, 40.0))]
    if failed_only:
        trials = [None, None]
    for i, t in enumerate(trials):
        if t is None:
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL, params={"max-num-seqs": 256 + i, "kv-cache-dtype": "auto"},
                distributions={"max-num-seqs": optuna.distributions.IntDistribution(1, 512),
                               "kv-cache-dtype": dists["kv-cache-dtype"]},
                user_attrs={"failure_reason": "out of memory"}))
            continue
        seqs, kv, values = t
        study.add_trial(optuna.trial.create_trial(
            params={"max-num-seqs": seqs, "kv-cache-dtype": kv}, distributions=dists, values=list(values),
            user_attrs={"baseline": i == 0, "startup_s": 1.5 + i, "peak_rss_mb": 100.0 * (i + 1),
                        "constraints": [], "flags": {"max-num-seqs": seqs}}))
    return study


@pytest.fixture
def study_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    create_study(url)
    return url
