"""Recording a session to JSONL and reading it back.

One line per record: {"t": epoch seconds, "kind": str, "payload": {...}}. Kinds written by
the dashboard: "header" (first line: version, start time), "metrics" (one scrape of a server:
server_id, values, histograms), "request" (a bench's per-request RequestRecord as a dict plus
run_id), "event" (an event-log entry), "server" (a server's state change), "marker" (anything
else worth a mark on the time axis). Replay feeds the same records back through the session.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

RECORDING_VERSION = 1


@dataclass(slots=True)
class Record:
    t: float
    kind: str
    payload: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "kind": self.kind, "payload": self.payload},
                          default=str)


class Recorder:
    """Appends records to a file as they come (line-buffered, so a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.write(Record(time.time(), "header", {"version": RECORDING_VERSION}))

    def write(self, record: Record) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(record.to_json() + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class RecordingError(ValueError):
    """The file is missing or is not a dyno tui recording."""


def read_recording(path: Path) -> list[Record]:
    """Every record of a recording, in file order; bad lines are an error naming the line."""
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording; pass a file written by `dyno tui`")
    return list(_records(path))


def _records(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as f:
        for num, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                yield Record(float(obj["t"]), str(obj["kind"]), dict(obj["payload"]))
            except (ValueError, KeyError, TypeError):
                raise RecordingError(f"{path}:{num}: not a dyno tui recording line") from None


def default_recording_path(results_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return results_dir / "tui-sessions" / f"session-{stamp}.jsonl"
