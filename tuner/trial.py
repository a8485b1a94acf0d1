"""One trial: a real server process with the trial's flags, under real load from loadgen.

Launch on a free loopback port, wait for /health, warm up, run the workload (repeats), stop
the server (SIGTERM, then SIGKILL after a bound) and leave no process behind. Anything that
goes wrong becomes a TrialFailed with a reason and the server log's tail, never a crash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadgen import BenchConfig, PointDone, PointStarted, RequestDone, run_bench
from loadgen.schema import RequestRecord
from tuner.engines import DynoEngine, Engine

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
TRIAL_ENV = "DYNO_TUNE_TRIAL"  # set in each server's environment: names the trial that owns it


class TrialFailed(RuntimeError):
    """The server would not start, crashed, ran out of memory or timed out."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


class TrialStopped(Exception):
    """The trial's progress callback stopped the load early (the pruner did); the server was stopped."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# on_progress(repeat, percent, records so far in this repeat) -> a reason to stop the load, or None
ProgressCallback = Callable[[int, int, list[RequestRecord]], "str | None"]


class LoadProgress:
    """Turns one load run's events into checkpoints at every 1/steps of the load (of the
    requests when num_prompts is set, else of the duration), and asks on_checkpoint at each
    whether to stop: loadgen's should_stop hook, called after each finished request."""

    def __init__(self, bench: BenchConfig, steps: int, on_checkpoint: Callable[[int, list[RequestRecord]], str | None]) -> None:
        self.per_point, self.duration_s = bench.num_prompts, bench.duration_s
        self.n_points = max(1, len(bench.points))
        self.steps, self.on_checkpoint = steps, on_checkpoint
        self.records: list[RequestRecord] = []
        self.indices: set[int] = set()  # measured work items of this point with a finished request
        self.points_done, self.point_t0, self.next = 0, time.monotonic(), 1

    def on_event(self, event: object) -> None:
        if isinstance(event, RequestDone) and not event.record.is_warmup:
            self.records.append(event.record)
            self.indices.add(event.record.index)
        elif isinstance(event, PointStarted):
            self.indices, self.point_t0 = set(), time.monotonic()
        elif isinstance(event, PointDone):
            self.points_done += 1

    def fraction(self) -> float:
        if self.per_point:
            part = len(self.indices) / self.per_point
        elif self.duration_s:
            part = (time.monotonic() - self.point_t0) / self.duration_s
        else:
            return 0.0
        return (self.points_done + min(part, 1.0)) / self.n_points

    def should_stop(self) -> str | None:
        # The last checkpoint crossed (the 100% one is the repeat's own end, not reported here).
        reached = min(int(self.fraction() * self.steps), self.steps - 1)
        if reached < self.next:
            return None
        self.next = reached + 1
        return self.on_checkpoint(100 * reached // self.steps, self.records)


@dataclass(frozen=True)
class TrialConfig:
    flags: dict[str, Any]
    bench: BenchConfig  # base_url and result_dir are filled in per run
    workdir: Path
    engine: Engine = field(default_factory=DynoEngine)
    repeats: int = 1
    startup_timeout_s: float = 300.0
    stop_timeout_s: float = 10.0


@dataclass
class TrialResult:
    summaries: list[dict[str, Any]]  # one per repeat
    startup_s: float
    peak_rss_mb: float
    result_dirs: list[str]
    command: list[str]
    started_at: float = 0.0  # epoch seconds: when the server was launched and when it was stopped
    ended_at: float = 0.0

    def metric(self, key: str) -> float:
        """Mean over repeats."""
        return statistics.fmean(float(s.get(key, 0.0)) for s in self.summaries)

    def spread(self, key: str) -> float:
        """Standard deviation over repeats (0 for one repeat)."""
        values = [float(s.get(key, 0.0)) for s in self.summaries]
        return statistics.stdev(values) if len(values) > 1 else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ServerProcess:
    """A server subprocess in its own process group, so stopping it stops all its children."""

    def __init__(self, command: list[str], log_path: Path, health_url: str, tag: str = "") -> None:
        self.command = command
        self.tag = tag
        self.log_path = log_path
        self.health_url = health_url
        self.proc: subprocess.Popen | None = None
        self.peak_rss_mb = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, TRIAL_ENV: self.tag})

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /health answered 200; TrialFailed if the server exits or times out."""
        assert self.proc is not None
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            code = self.proc.poll()
            if code is not None:
                raise TrialFailed(f"server exited with code {code} before it was ready "
                                  f"({self.exit_hint()})", self.tail())
            try:
                if httpx.get(self.health_url, timeout=2.0).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            self.sample()
            time.sleep(0.25)
        raise TrialFailed(f"server not healthy after {timeout_s:g}s (startup timeout)", self.tail())

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            raise TrialFailed(f"server died under load with code {code} ({self.exit_hint()})", self.tail())

    def exit_hint(self) -> str:
        code = self.proc.returncode if self.proc else None
        tail = self.tail().lower()
        if code == -signal.SIGKILL or "out of memory" in tail or "memoryerror" in tail:
            return "out of memory"
        return (self.tail().strip().splitlines() or ["no output"])[-1][:200]

    def sample(self) -> None:
        if self.proc is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(self.proc.pid))

    def tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM to the group, SIGKILL after timeout_s; reaps the process."""
        if self.proc is None:
            return
        self.sample()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=timeout_s)
                break
            except subprocess.TimeoutExpired:
                log.warning("server pid %d ignored SIGTERM for %gs; killing it", self.proc.pid, timeout_s)
        self.proc.wait()
        # Children that left the group's leader behind die with the group too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(getattr(self, "stop_timeout_s", 10.0))


def run_trial(cfg: TrialConfig, on_repeat: Callable[[int, dict[str, Any]], None] | None = None,
              on_progress: ProgressCallback | None = None, progress_steps: int = 4) -> TrialResult:
    """Launch, measure cfg.repeats times, stop. on_repeat(i, summary) may raise to end early
    (the pruner does): the server is stopped all the same. on_progress(i, percent, records) is
    asked while a repeat's load runs, at every 1/progress_steps of it; a reason it returns stops
    the load at once and the trial with TrialStopped (the server stopped as usual)."""
    port = free_port()
    command = cfg.engine.command(cfg.flags, HOST, port)
    base_url = f"http://{HOST}:{port}"
    server = ServerProcess(command, cfg.workdir / "server.log", base_url + cfg.engine.health_path,
                           tag=str(cfg.workdir))
    server.stop_timeout_s = cfg.stop_timeout_s
    summaries, dirs = [], []
    started = time.time()
    with server:
        startup = server.wait_ready(cfg.startup_timeout_s)
        for i in range(cfg.repeats):
            out = cfg.workdir / f"repeat-{i}"
            bench = dataclasses.replace(cfg.bench, base_url=base_url, result_dir=str(out))
            progress = None
            if on_progress is not None:
                progress = LoadProgress(cfg.bench, progress_steps,
                                        lambda pct, records, i=i: on_progress(i, pct, records))
            try:
                result = run_bench(bench, on_event=progress and progress.on_event,
                                   should_stop=progress and progress.should_stop)
            except Exception as e:  # noqa: BLE001 - any load failure is the trial's, reported with the log
                server.check_alive()
                raise TrialFailed(f"load failed: {type(e).__name__}: {e}", server.tail()) from e
            server.check_alive()
            if result.stopped:
                raise TrialStopped(result.stopped)
            summary = result.summary
            if not summary.get("completed"):
                raise TrialFailed(f"no request succeeded ({summary.get('failed_by_kind') or 'no records'})",
                                  server.tail())
            summaries.append(summary)
            dirs.append(str(out))
            server.sample()
            if on_repeat is not None:
                on_repeat(i, summary)
    return TrialResult(summaries, startup, server.peak_rss_mb, dirs, command, started, time.time())


def bench_command(bench: BenchConfig, base_url: str) -> str:
    """The `dyno bench` command that sends the same load as a trial does."""
    import shlex
    argv = ["dyno", "bench", "--base-url", base_url, "--endpoint", bench.endpoint,
            "--dataset-name", bench.dataset.name, "--input-len-dist", bench.dataset.input_len,
            "--output-len-dist", bench.dataset.output_len, "--warmup", str(bench.warmup),
            "--seed", str(bench.seed)]
    if bench.num_prompts is not None:
        argv += ["--num-prompts", str(bench.num_prompts)]
    if bench.duration_s is not None:
        argv += ["--duration", f"{bench.duration_s:g}"]
    for point in bench.points:
        if point.concurrency is not None:
            argv += ["--max-concurrency", str(point.concurrency)]
        else:
            argv += ["--request-rate", f"{point.rate:g}"]
            if point.max_concurrency:
                argv += ["--max-concurrency", str(point.max_concurrency)]
    argv += [f"--slo={slo.metric}={slo.limit_s * 1000:g}ms" for slo in bench.slos]
    if bench.ignore_eos:
        argv.append("--ignore-eos")
    return shlex.join(argv)
