"""engine/server/request_log.py and trace_log.py: what a request leaves in the logs."""

from __future__ import annotations

import json
import logging
import time

import pytest

from engine.args import ArgsError, EngineArgs
from engine.sampling_params import SamplingParams
from engine.server.request_log import RequestLogger
from engine.server.trace_log import TraceLog

LOGGER = "engine.server.requests"


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_received_and_finished_lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    log = RequestLogger(EngineArgs())
    log.received("req-1", "Hello there, world", SamplingParams(max_tokens=5, temperature=0))
    log.finished("req-1", num_prompt_tokens=4, num_output_tokens=5, finish_reason="length", e2e_s=0.25)
    received, finished = lines(caplog)
    assert received.startswith("Received request req-1: prompt: 'Hello there, world', params: SamplingParams(")
    assert "max_tokens=5" in received and "temperature=0" in received
    assert finished == ("Finished request req-1: prompt_tokens=4, output_tokens=5, finish_reason=length, "
                        "e2e=0.250s")


def test_max_log_len_cuts_prompts_and_token_ids(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    log = RequestLogger(EngineArgs(max_log_len=5))
    log.received("a", "abcdefghij", SamplingParams())
    log.received("b", list(range(100, 120)), SamplingParams())
    text, ids = lines(caplog)
    assert "prompt: 'abcde'," in text and "abcdef" not in text
    assert "prompt_token_ids: [100, 101, 102, 103, 104]," in ids


def test_max_log_len_zero_and_none(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    RequestLogger(EngineArgs(max_log_len=0)).received("a", "abc", SamplingParams())
    RequestLogger(EngineArgs()).received("b", "x" * 5000, SamplingParams())
    empty, full = lines(caplog)
    assert "prompt: ''," in empty and "x" * 5000 in full


def test_disable_log_requests(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    log = RequestLogger(EngineArgs(disable_log_requests=True))
    log.received("a", "hello", SamplingParams())
    log.finished("a", num_prompt_tokens=1, num_output_tokens=1, finish_reason="stop", e2e_s=0.1)
    assert lines(caplog) == []


# -- trace log -------------------------------------------------------------------------------


def test_trace_log_off():
    trace = TraceLog(None)
    assert not trace.enabled and trace.path is None
    trace.write(request_id="x", arrival=1.0, scheduled=None, first_token=None, finished=2.0,
                num_prompt_tokens=1, num_output_tokens=0, finish_reason=None)


def test_trace_log_one_json_line_per_request(tmp_path):
    directory = tmp_path / "new" / "traces"
    trace = TraceLog(str(directory))
    t = time.time()
    trace.write(request_id="r1", arrival=t, scheduled=t + 0.01, first_token=t + 0.1, finished=t + 0.5,
                num_prompt_tokens=12, num_output_tokens=8, finish_reason="length")
    trace.write(request_id="r2", arrival=t, scheduled=None, first_token=None, finished=t + 0.2,
                num_prompt_tokens=3, num_output_tokens=0, finish_reason="abort")
    files = list(directory.iterdir())
    assert files == [trace.path]
    first, second = [json.loads(line) for line in trace.path.read_text().splitlines()]  # flushed per line
    assert first == {"request_id": "r1", "arrival_time": pytest.approx(t), "scheduled_time": pytest.approx(t + 0.01),
                     "first_token_time": pytest.approx(t + 0.1), "finished_time": pytest.approx(t + 0.5),
                     "queue_s": pytest.approx(0.01), "ttft_s": pytest.approx(0.1), "e2e_s": pytest.approx(0.5),
                     "num_prompt_tokens": 12, "num_output_tokens": 8, "finish_reason": "length"}
    assert second["scheduled_time"] is None and second["queue_s"] is None and second["ttft_s"] is None
    assert second["finish_reason"] == "abort"
    trace.close()
    trace.write(request_id="late", arrival=t, scheduled=None, first_token=None, finished=t,
                num_prompt_tokens=1, num_output_tokens=0, finish_reason=None)  # after close: ignored


def test_trace_log_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ArgsError, match=r"^--trace-log-directory .*: cannot write there"):
        TraceLog(str(blocker / "sub"))
