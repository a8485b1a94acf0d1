"""Live per-request events against the mock: RequestSent, then FirstToken, then RequestDone, one
of each per successful request; a request that fails before any content has no FirstToken."""

from __future__ import annotations

from collections import defaultdict

from loadgen import (DatasetConfig, FirstToken, LoadPoint, PointDone, PointStarted, RequestDone, RequestRecord,
                     RequestSent, run_bench)
from loadgen.backend import _Stream
from tests.loadgen.conftest import make_config


def per_request(events: list) -> dict[str, list]:
    """Each request's events, in the order they came, keyed by request id."""
    out: dict[str, list] = defaultdict(list)
    for e in events:
        if isinstance(e, (RequestSent, FirstToken)):
            out[e.request_id].append(e)
        elif isinstance(e, RequestDone):
            out[e.record.request_id].append(e)
    return out


def test_each_request_is_sent_then_first_token_then_done(mock_factory):
    mock = mock_factory(ttft_ms=30, itl_ms=5, output_len=6)
    n = 9
    events: list = []
    result = run_bench(make_config(mock, LoadPoint(concurrency=3), num_prompts=n), on_event=events.append)
    records = {r.request_id: r for r in result.points[0].records}
    assert len(records) == n and all(r.ok for r in records.values())
    kinds = [type(e) for e in events]
    assert kinds.count(RequestSent) == kinds.count(FirstToken) == kinds.count(RequestDone) == n
    assert isinstance(events[0], PointStarted) and isinstance(events[-1], PointDone)
    by_request = per_request(events)
    assert by_request.keys() == records.keys()
    for request_id, (sent, first, done) in by_request.items():
        assert (type(sent), type(first), type(done)) == (RequestSent, FirstToken, RequestDone)
        record = records[request_id]
        assert done.record is record
        # The events carry the record's own times, and the run/point the record belongs to.
        assert (sent.index, sent.point, sent.is_warmup) == (record.index, record.point, record.is_warmup)
        assert sent.run_id == result.summary["run_id"] and request_id.startswith(sent.run_id)
        assert (sent.due_time, sent.send_time, sent.dispatch_time) == (
            record.scheduled_time, record.send_time, record.dispatch_time)
        assert sent.dispatch_time is None  # closed loop
        assert (first.index, first.time) == (record.index, record.first_token_time)
        assert sent.send_time < first.time <= record.end_time


def test_open_loop_events_carry_the_dispatch_time(mock_factory):
    mock = mock_factory(ttft_ms=30, itl_ms=5, output_len=6)
    events: list = []
    result = run_bench(make_config(mock, LoadPoint(rate=50.0, arrival="constant"), num_prompts=5),
                       on_event=events.append)
    sent = [e for e in events if isinstance(e, RequestSent)]
    assert sorted(e.index for e in sent) == list(range(5))
    for e in sent:
        assert e.point == "rate=50" and e.dispatch_time is not None
        assert e.due_time <= e.dispatch_time <= e.send_time
    assert sum(isinstance(e, FirstToken) for e in events) == result.summary["completed"] == 5


def test_a_request_failed_before_its_first_token_has_sent_and_done_only(mock_factory):
    mock = mock_factory(ttft_ms=30, itl_ms=5, output_len=6)
    events: list = []
    result = run_bench(make_config(mock, LoadPoint(concurrency=2), num_prompts=4, endpoint="/v1/no-such"),
                       on_event=events.append)
    records = result.points[0].records
    assert len(records) == 4 and {r.error_kind for r in records} == {"http_404"}
    assert not any(isinstance(e, FirstToken) for e in events)
    for request_id, evs in per_request(events).items():
        assert [type(e) for e in evs] == [RequestSent, RequestDone]


def test_failures_and_successes_mixed(mock_factory):
    """Short prompts answer in ~50 ms, long ones would take 1 s and time out at 0.5 s first."""
    mock = mock_factory(ttft_ms=0, itl_ms=5, output_len=4, prefill_ms_per_token=5.0)
    dataset = DatasetConfig(input_len="hist:10=0.5,200=0.5", output_len="4")
    events: list = []
    result = run_bench(make_config(mock, LoadPoint(concurrency=4), num_prompts=12, dataset=dataset,
                                   request_timeout_s=0.5), on_event=events.append)
    records = {r.request_id: r for r in result.points[0].records}
    assert any(r.ok for r in records.values()) and any(r.error_kind == "timeout" for r in records.values())
    for request_id, evs in per_request(events).items():
        record = records[request_id]
        expected = [RequestSent, FirstToken, RequestDone] if record.first_token_time else [RequestSent, RequestDone]
        assert [type(e) for e in evs] == expected
    assert sum(isinstance(e, FirstToken) for e in events) == sum(r.ok for r in records.values())


def test_multi_turn_turns_each_have_their_events(mock_factory):
    mock = mock_factory(ttft_ms=10, itl_ms=2, output_len=3)
    dataset = DatasetConfig(name="multiturn", num_turns=3, input_len="8", output_len="3")
    events: list = []
    result = run_bench(make_config(mock, LoadPoint(concurrency=2), num_prompts=2, dataset=dataset,
                                   endpoint="/v1/chat/completions"), on_event=events.append)
    records = result.points[0].records
    by_request = per_request(events)
    assert len(by_request) == len(records) == 6
    assert all([type(e) for e in evs] == [RequestSent, FirstToken, RequestDone] for evs in by_request.values())


def test_the_per_token_path_calls_the_first_token_hook_once():
    calls: list = []
    stream, record = _Stream(calls.append), RequestRecord("r", "p", 0, False, scheduled_time=0.0)
    for t in (1.0, 2.0, 3.0):
        stream.take({"choices": [{"text": "x"}]}, t, False, record)
    assert calls == [record] and record.first_token_time == 1.0 and len(record.chunk_times) == 3
    _Stream().take({"choices": [{"text": "x"}]}, 1.0, False, RequestRecord("s", "p", 0, False, 0.0))  # no hook
