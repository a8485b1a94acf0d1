"""A benchmark run: the server found once, then load points run one after another, each
written to the result directory as it finishes (so an interrupted run keeps what it did)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loadgen import schema
from loadgen.arrivals import LoadPoint
from loadgen.backend import BackendConfig, OpenAIBackend, make_client
from loadgen.datasets import DatasetConfig, iter_workload
from loadgen.discovery import ServerInfo, check_server, discover_local, pick_model
from loadgen.events import EventCallback, PointDone, PointStarted, RequestDone
from loadgen.metrics import SLO, summarize
from loadgen.runner import Clock, Limits, PointRun, make_run_id, run_point
from loadgen.schema import RequestRecord
from loadgen.scrape import MetricSample, scrape_loop
from loadgen.tokens import TokenCounter, load_counter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    base_url: str | None = None  # None: look on the usual local ports
    endpoint: str = "/v1/completions"
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    tokenizer: str | None = None  # a local directory; None: count with the server's usage
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    points: tuple[LoadPoint, ...] = (LoadPoint(rate=math.inf),)
    num_prompts: int | None = 1000  # per point, after the warm-up
    duration_s: float | None = None  # per point
    warmup: int = 0  # requests per point left out of the metrics
    slos: tuple[SLO, ...] = ()
    ignore_eos: bool = False
    seed: int = 0
    result_dir: str | None = None
    scrape_interval_s: float | None = 1.0  # None: do not scrape /metrics
    request_timeout_s: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    request_id_header: bool = True  # see BackendConfig

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.api_key:
            data["api_key"] = "***"  # never write a secret into result files
        return data


@dataclass
class PointResult:
    point: LoadPoint
    summary: dict[str, Any]
    records: list[RequestRecord]
    server_metrics: list[MetricSample] = field(default_factory=list)


@dataclass
class BenchResult:
    config: dict[str, Any]
    points: list[PointResult]
    result_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the capacity answer
    stopped: str | None = None  # the reason, when the caller's should_stop ended the run early

    @property
    def summary(self) -> dict[str, Any]:
        """The last point's summary (the only one for a single-point run)."""
        return self.points[-1].summary if self.points else {}


class Bench:
    """Holds what a run's points share: the server, tokenizer, result files, run id."""

    def __init__(self, config: BenchConfig, on_event: EventCallback | None = None,
                 should_stop: Callable[[], str | None] | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.should_stop = should_stop
        self.run_id = make_run_id()
        self.result = BenchResult(config.to_dict(), [])
        self.server: ServerInfo | None = None
        self.model = config.model or ""
        self.counter = TokenCounter()
        self.dir = Path(config.result_dir) if config.result_dir else None
        self.writer: schema.RecordWriter | None = None

    def open(self) -> Bench:
        """Find the server and load the tokenizer: fails fast, before any load is sent."""
        cfg = self.config
        self.server = check_server(cfg.base_url, cfg.api_key) if cfg.base_url else discover_local(cfg.api_key)
        self.model = pick_model(self.server, cfg.model)
        self.counter = load_counter(cfg.tokenizer)
        self.result.config.update(base_url=self.server.base_url, model=self.model)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.result.result_dir = self.dir
            self.writer = schema.RecordWriter(self.dir / schema.REQUESTS_FILE)
        return self

    def close(self) -> None:
        """Write the run summary (whatever finished) and close the records file."""
        self.write_summary()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backend_config(self) -> BackendConfig:
        cfg = self.config
        return BackendConfig(self._base_url, cfg.endpoint, self.model, cfg.api_key, cfg.ignore_eos,
                             cfg.request_timeout_s, cfg.extra_body, cfg.request_id_header)

    @property
    def _base_url(self) -> str:
        assert self.server is not None, "call open() first"
        return self.server.base_url

    async def run_point(self, point: LoadPoint, num_prompts: int | None = None,
                        duration_s: float | None = None) -> PointResult:
        cfg = self.config
        point_no = len(self.result.points)
        limits = Limits(num_prompts if num_prompts is not None else cfg.num_prompts,
                        duration_s if duration_s is not None else cfg.duration_s, cfg.warmup)
        # One socket per stream in flight; an unbounded open loop may open one per request.
        raise_fd_limit((point.max_in_flight or (limits.num_requests or 10_000) + limits.warmup) + 64)
        clock = Clock.start()
        workload = iter_workload(dataclasses.replace(cfg.dataset, seed=cfg.seed + point_no), self.counter)
        self._emit(PointStarted(point, limits.num_requests))
        async with make_client(self.backend_config(), point.max_in_flight) as client:
            backend = OpenAIBackend(self.backend_config(), client, self.counter, clock.now)
            run = PointRun(point, point_no, self.run_id, limits, backend, self._sink, clock,
                           should_stop=self.should_stop, on_event=self.on_event)
            samples: list[MetricSample] = []
            scraper = self._start_scraper(point, clock, samples)
            try:
                records = await run_point(run, workload, np.random.default_rng(cfg.seed + point_no))
            except asyncio.CancelledError:  # Ctrl-C: summarize what finished, then stop
                run.stop_reason = "interrupted"
                self._finish_point(point, run, run.records, samples)
                raise
            finally:
                if scraper is not None:
                    scraper.cancel()
        if run.stopped_early:
            self.result.stopped = run.stop_reason
        return self._finish_point(point, run, records, samples)

    def _start_scraper(self, point: LoadPoint, clock: Clock, samples: list) -> asyncio.Task | None:
        interval = self.config.scrape_interval_s
        if not interval or self.server is None or not self.server.has_metrics:
            return None
        path = self.dir / schema.SERVER_METRICS_FILE if self.dir else None
        url = self._base_url.rstrip("/") + "/metrics"
        return asyncio.create_task(scrape_loop(url, self.config.api_key, point.label, interval, clock.now,
                                               path, samples))

    def _sink(self, record: RequestRecord) -> None:
        if self.writer is not None:
            self.writer.append(record)
        self._emit(RequestDone(record))

    def _finish_point(self, point: LoadPoint, run: PointRun, records: list[RequestRecord],
                      samples: list[MetricSample]) -> PointResult:
        summary = summarize(records, self.config.slos)
        summary.update(self._point_fields(point))
        if run.stop_reason:
            summary["stop_reason"] = run.stop_reason
            self.result.warnings.append(f"{point.label}: {run.stop_reason}")
        if summary["is_lagging"] and not point.is_closed:
            self.result.warnings.append(lag_warning(point, summary))
        result = PointResult(point, summary, records, samples)
        self.result.points.append(result)
        if self.dir is not None:
            flat = dict(summary, config=self.result.config)
            schema.write_json(schema.point_file(self.dir, point.label), flat)
            self.write_summary()
        self._emit(PointDone(point, summary))
        return result

    def _point_fields(self, point: LoadPoint) -> dict[str, Any]:
        return {"date": dt.datetime.now().strftime("%Y%m%d-%H%M%S"), "run_id": self.run_id,
                "backend": "openai-chat" if "chat" in self.config.endpoint else "openai",
                "model_id": self.model, "tokenizer_id": self.config.tokenizer,
                "request_rate": point.rate, "burstiness": point.burstiness, "arrival": point.process,
                "max_concurrency": point.max_in_flight, "concurrency": point.concurrency}

    def write_summary(self) -> None:
        if self.dir is None:
            return
        data = {"schema_version": schema.SCHEMA_VERSION, "run_id": self.run_id, "config": self.result.config,
                "warnings": self.result.warnings, "points": [p.summary for p in self.result.points]}
        data.update(self.result.extra)
        schema.write_json(self.dir / schema.SUMMARY_FILE, data)
        schema.write_csv(self.dir / schema.CSV_FILE, [p.summary for p in self.result.points])

    def _emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def lag_warning(point: LoadPoint, summary: dict[str, Any]) -> str:
    return (f"{point.label}: the generator fell behind the load shape (median scheduling lag "
            f"{summary['median_sched_lag_ms']:.2f} ms, p99 {summary['p99_sched_lag_ms']:.1f} ms); "
            "the requested rate was not kept, the run is marked is_lagging")


def raise_fd_limit(needed: int) -> None:
    """Each open stream is a socket: lift the soft file limit toward the hard one if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def arun_bench(config: BenchConfig, on_event: EventCallback | None = None,
                     should_stop: Callable[[], str | None] | None = None) -> BenchResult:
    """Run every point of `config.points` in turn.

    should_stop, if given, is asked after each finished request (after its RequestDone event);
    a non-empty string stops the run there: no new request is sent, the requests in flight are
    cancelled (left out of the records), the point is summarized with what finished and
    `stop_reason` "stopped early: <reason>", later points are skipped, and the result's
    `stopped` holds the reason. Like on_event it runs on the event loop: keep it quick."""
    with Bench(config, on_event, should_stop).open() as bench:
        for point in config.points:
            await bench.run_point(point)
            if bench.result.stopped:
                break
    return bench.result


def run_bench(config: BenchConfig, on_event: EventCallback | None = None,
              should_stop: Callable[[], str | None] | None = None) -> BenchResult:
    return asyncio.run(arun_bench(config, on_event, should_stop))
