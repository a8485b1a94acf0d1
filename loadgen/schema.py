"""The result-file contract: per-request records (JSONL) and load-point summaries (JSON).

Every consumer (tuner, reports, dashboard) reads results through this module. Records keep
raw timestamps only; latencies are derived properties, so a definition can be fixed once here
and every old file is re-read with it. Bump SCHEMA_VERSION when a stored field changes.

Times are Unix epoch seconds (float) so records join a server's logs; all differences are
taken between times measured on the same monotonic clock and shifted by one offset per run.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1

REQUESTS_FILE = "requests.jsonl"
SUMMARY_FILE = "summary.json"
CSV_FILE = "summary.csv"
POINTS_DIR = "points"
SERVER_METRICS_FILE = "server_metrics.jsonl"

# The latency metrics vLLM's result JSON reports, and the statistics it reports for each.
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
STAT_PREFIXES = ("mean", "median", "std", "p90", "p95", "p99", "p99_9")


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it. Written as one JSONL line when it ends."""

    request_id: str  # also sent as X-Request-Id
    point: str  # load point label, e.g. "concurrency=8" or "rate=10"
    index: int  # position in the workload
    is_warmup: bool
    scheduled_time: float  # when the load shape wanted it sent
    send_time: float | None = None  # just before the HTTP request went out
    first_token_time: float | None = None  # first chunk carrying content
    chunk_times: list[float] = field(default_factory=list)  # every chunk with content
    chunk_tokens: list[int] = field(default_factory=list)  # tokens in each chunk
    end_time: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    expected_output_tokens: int | None = None  # what the workload asked for
    status: int | None = None  # HTTP status
    error_kind: str | None = None  # None when it succeeded
    error: str | None = None
    dispatch_time: float | None = None  # when the generator got to it (open loop)
    session_id: str | None = None  # multi-turn: the conversation
    turn: int | None = None
    usage_reported: bool = False  # token counts came from the server's usage
    response_id: str | None = None  # the server's own id for it (first chunk's "id")

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.end_time is not None

    @property
    def ttft(self) -> float | None:
        if self.first_token_time is None or self.send_time is None:
            return None
        return self.first_token_time - self.send_time

    @property
    def last_token_time(self) -> float | None:
        return self.chunk_times[-1] if self.chunk_times else self.end_time

    @property
    def e2el(self) -> float | None:
        """Send to the last token, as vLLM measures it (the trailing usage chunk and [DONE]
        carry no token); `end_time`, when the stream closed, bounds the run's duration."""
        if self.last_token_time is None or self.send_time is None:
            return None
        return self.last_token_time - self.send_time

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first, as vLLM defines it: (e2el - ttft) / (n - 1)."""
        if self.output_tokens <= 1 or self.ttft is None or self.e2el is None:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)

    @property
    def itl(self) -> list[float]:
        """Gaps between content chunks; a chunk of k tokens counts as k gaps of 1/k each."""
        out: list[float] = []
        for j in range(1, len(self.chunk_times)):
            gap = self.chunk_times[j] - self.chunk_times[j - 1]
            k = self.chunk_tokens[j] if j < len(self.chunk_tokens) else 1
            k = max(k, 1)
            out.extend([gap / k] * k)
        return out

    @property
    def sched_lag(self) -> float | None:
        """How late the generator itself was, against the load shape's intended time."""
        if self.dispatch_time is None:
            return None
        return max(0.0, self.dispatch_time - self.scheduled_time)

    @property
    def ttft_intended(self) -> float | None:
        """TTFT from the intended send time: queueing the client caused is not hidden."""
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.scheduled_time

    @property
    def e2el_intended(self) -> float | None:
        if self.last_token_time is None:
            return None
        return self.last_token_time - self.scheduled_time

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def append_record(path: Path, record: RequestRecord) -> None:
    """Append one line to a file (opened and closed each time; RecordWriter keeps it open)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")


class RecordWriter:
    """Appends records to a JSONL file kept open, flushing each line: a run killed midway
    keeps every finished request, without an open() per request in the hot loop."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")

    def append(self, record: RequestRecord) -> None:
        self.file.write(record.to_json() + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_records(path: str | Path) -> list[RequestRecord]:
    return list(iter_records(path))


def iter_records(path: str | Path) -> Iterator[RequestRecord]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:  # a torn last line (killed mid-write) is skipped, not fatal
                try:
                    yield RequestRecord.from_dict(json.loads(line))
                except json.JSONDecodeError:
                    continue


def metric_key(stat: str, metric: str) -> str:
    """vLLM's key names: mean_ttft_ms, p99_9_itl_ms (vLLM writes p99.9 as 'p99.9')."""
    return f"{stat}_{metric}_ms"


def point_file(result_dir: Path, label: str) -> Path:
    safe = label.replace("=", "-").replace("/", "_")
    return result_dir / POINTS_DIR / f"{safe}.json"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2) + "\n", encoding="utf-8")


def _finite(data: Any) -> Any:
    """JSON has no inf/nan; write them as null so every reader parses the file."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
    if not rows:
        return
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_summary(result_dir: str | Path) -> dict[str, Any]:
    """The run summary: {'schema_version', 'config', 'points': [flat point summaries], ...}."""
    data = json.loads((Path(result_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{result_dir}: schema version {version}, this dyno reads {SCHEMA_VERSION}")
    return data
