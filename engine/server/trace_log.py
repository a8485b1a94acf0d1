"""--trace-log-directory: one JSON line per finished request, for offline timing analysis.

The file is `<directory>/trace-<pid>.jsonl` (one per server process, appended to, flushed per
line). Times passed to write() are Unix times (seconds, float: the engine's monotonic stamps
shifted by time.time() - time.monotonic()); a line holds them and the derived durations:

    {"request_id", "arrival_time", "scheduled_time", "first_token_time", "finished_time",
     "queue_s", "ttft_s", "e2e_s", "num_prompt_tokens", "num_output_tokens", "finish_reason"}

scheduled_time, first_token_time and their durations are null for a request that never got
that far (aborted while waiting, or failed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from engine.args import ArgsError

logger = logging.getLogger(__name__)


class TraceLog:
    def __init__(self, directory: str | None) -> None:
        self.path: Path | None = None
        self._file = None
        self._lock = threading.Lock()
        if directory is None:
            return
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.path = Path(directory) / f"trace-{os.getpid()}.jsonl"
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise ArgsError(f"--trace-log-directory {directory}: cannot write there "
                            f"({e.strerror}); give a writable directory") from None
        logger.info("writing request traces to %s", self.path)

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def write(self, *, request_id: str, arrival: float, scheduled: float | None,
              first_token: float | None, finished: float, num_prompt_tokens: int,
              num_output_tokens: int, finish_reason: str | None) -> None:
        if self._file is None:
            return

        def since(t: float | None, start: float | None) -> float | None:
            return None if t is None or start is None else round(t - start, 6)

        def at(t: float | None) -> float | None:
            return None if t is None else round(t, 6)

        entry = {"request_id": request_id,
                 "arrival_time": at(arrival), "scheduled_time": at(scheduled),
                 "first_token_time": at(first_token), "finished_time": at(finished),
                 "queue_s": since(scheduled, arrival), "ttft_s": since(first_token, arrival),
                 "e2e_s": since(finished, arrival),
                 "num_prompt_tokens": num_prompt_tokens, "num_output_tokens": num_output_tokens,
                 "finish_reason": finish_reason}
        line = json.dumps(entry) + "\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except (OSError, ValueError) as e:  # disk full, or closed at shutdown
                logger.warning("trace log %s: cannot write (%s)", self.path, e)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
