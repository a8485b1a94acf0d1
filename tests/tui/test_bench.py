"""The Bench screen: a run against loadgen's mock server from the form (progress to 100%, the
timeline's rows, token gaps on Enter, the result dir written as `dyno bench` writes it, every
request recorded in the session), requests shown in flight (waiting, then streaming) before they
end, stopping a run, bad input, and the timeline's drawing."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from rich.console import Console

from loadgen import (FirstToken, LoadPoint, MockPacing, MockServer, RequestDone, RequestRecord, RequestSent,
                     read_summary)
from loadgen.schema import REQUESTS_FILE
from tests.tui.conftest import wait_until
from tui.app import DynoApp
from tui.bench_runner import BenchPlan, PlanError, parse_values
from tui.session import Session
from tui.slo import SloSet
from tui.widgets.request_detail import describe
from tui.widgets.timeline import RequestTimeline, bar_cells, is_live, outcome


async def notified(pilot, app, text: str) -> None:
    """Wait until a notification containing text was shown."""
    await wait_until(pilot, lambda: any(text in n.message for n in app._notifications), what=repr(text))


def plain(widget) -> str:
    """What a Static shows, as text (its content may be a rich renderable)."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def record(index: int = 0, ok: bool = True, t0: float = 100.0) -> RequestRecord:
    """Due at t0, sent 1 s late, first token at +2 s, chunks every 0.5 s, done at +4 s."""
    return RequestRecord(f"r{index}", "concurrency=1", index, False, scheduled_time=t0, send_time=t0 + 1,
                         first_token_time=t0 + 2, chunk_times=[t0 + 2, t0 + 2.5, t0 + 3, t0 + 4],
                         chunk_tokens=[1, 1, 1, 2], end_time=t0 + 4, input_tokens=4, output_tokens=5,
                         error_kind=None if ok else "http", error=None if ok else "HTTP 500")


def test_bar_cells_show_queued_waiting_and_streaming_on_the_run_axis():
    cells = bar_cells(record(), 100.0, 108.0, 8)  # one cell per second
    assert "".join(c for c, _ in cells) == "·░██    "
    assert [p for _, p in cells][:5] == ["queued", "waiting", "streaming", "streaming", ""]


def sent(r: RequestRecord) -> RequestSent:
    return RequestSent(r.request_id, "run", r.point, r.index, r.is_warmup, r.scheduled_time, r.send_time, None)


def test_a_row_opens_when_sent_streams_at_first_token_and_ends_with_its_record():
    timeline = RequestTimeline()
    done, failed, cut = record(0), record(1, ok=False), record(2)
    ended = timeline.apply([sent(done), sent(failed), sent(cut)], now=101.5)
    assert ended == set() and timeline.num_live == 3
    assert [outcome(r) for r in timeline.records] == ["waiting"] * 3
    # In flight, the bar runs to now: queued (due -> sent), then waiting.
    assert "".join(c for c, _ in bar_cells(timeline.records[0], 100.0, 108.0, 8, now=101.5)) == "·░      "
    ended = timeline.apply([FirstToken(done.request_id, 0, 102.0), RequestDone(failed),
                            FirstToken(cut.request_id, 2, 102.0)], now=103.0)
    assert ended == {failed.request_id}
    assert [outcome(r) for r in timeline.records] == ["streaming", "http", "streaming"]
    assert timeline.records[1] is failed and timeline.t1 == 104.0  # the failed one ended at +4 s
    assert "".join(c for c, _ in bar_cells(timeline.records[0], 100.0, 108.0, 8, now=103.0)) == "·░██    "
    timeline.apply([RequestDone(done)], now=103.5)
    assert timeline.records[0] is done and timeline.num_live == 1
    # The run stops with one request in flight: it gets no RequestDone; its row is cancelled.
    timeline.end_run(now=105.0)
    assert timeline.num_live == 0 and outcome(timeline.records[2]) == "cancelled"
    assert timeline.records[2].end_time == 105.0 and not is_live(timeline.records[2])
    # A finished record with no RequestSent before it (a replay, a snapshot) gets its own row.
    timeline.add([record(7)])
    assert len(timeline.records) == 4 and timeline.get("r7").ok


def test_token_gaps_split_multi_token_chunks():
    text = describe(record()).plain
    # The last chunk carries 2 tokens 1 s after the one before: 2 gaps of 0.5 s, as loadgen's ITL.
    assert "token gaps (4), ms: min 500.0 max 500.0" in text
    assert text.endswith(" 500.0  500.0  500.0  500.0")
    assert "error: HTTP 500" in describe(record(ok=False)).plain


def test_runner_rate_and_sweep_points(mock_server, tmp_path):
    """Open-loop rates and a sweep (synchronous, throughput, then rates between) through the runner."""
    from tui.bench_runner import BenchRunner

    plan = BenchPlan(mock_server.base_url, input_len=8, output_len=4, num_prompts=4, mode="rate", values=(50,))
    result = BenchRunner(plan, tmp_path / "rate").run()
    assert [p.summary["point"] for p in result.points] == ["rate=50"]
    plan = BenchPlan(mock_server.base_url, input_len=8, output_len=4, num_prompts=4, mode="sweep", sweep_points=3)
    result = BenchRunner(plan, tmp_path / "sweep").run()
    labels = [p.summary["point"] for p in result.points]
    assert len(labels) == plan.num_points == 3
    assert labels[:2] == ["concurrency=1", "rate=inf"] and labels[2].startswith("rate=")
    assert read_summary(tmp_path / "sweep")["sweep"]["rates"]
    # Stopped during its first point, a sweep ends there (later points are not started).
    runner = BenchRunner(dataclasses.replace(plan, num_prompts=400), tmp_path / "stopped")
    runner.on_event = lambda event: runner.stop() if isinstance(event, RequestDone) else None
    result = runner.run()
    assert result.stopped == "stopped early: stopped from the dashboard"
    assert [p.summary["point"] for p in result.points] == ["concurrency=1"]
    assert 1 <= result.points[0].summary["completed"] < 400


def test_form_values_are_checked_before_a_run():
    assert parse_values("4, 16 64", "concurrency") == (4, 16, 64)
    assert parse_values("2 inf", "rate") == (2, float("inf"))
    for text, mode in (("", "concurrency"), ("0", "concurrency"), ("2.5", "concurrency"), ("x", "rate"),
                       ("0", "rate")):
        with pytest.raises(PlanError):
            parse_values(text, mode)
    plan = BenchPlan("http://x", values=(1, 4), num_prompts=10)
    assert [p.label for p in plan.points()] == ["concurrency=1", "concurrency=4"]
    assert plan.total_requests == 20


@pytest.fixture(scope="module")
def slow_mock():
    """Slow enough that each request spends several screen refreshes waiting and streaming."""
    with MockServer(MockPacing(ttft_ms=1000, itl_ms=200, output_len=4)) as mock:
        yield mock


@pytest.mark.asyncio
async def test_requests_show_in_flight_before_they_end(slow_mock, results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        await attach(pilot, app, slow_mock.base_url)
        screen = app.screen
        screen.query_one("#num-prompts").value = "6"
        screen.query_one("#values").value = "3"
        await pilot.press("ctrl+r")
        timeline = screen.query_one(RequestTimeline)

        def rows(state: str) -> list[str]:
            return [r.request_id for r in timeline.records if outcome(r) == state]

        await wait_until(pilot, lambda: len(rows("waiting")) == 3, what="three requests sent, no token yet")
        assert screen.runner is not None and screen.done == 0 and timeline.num_live == 3
        line = timeline.render_line(0).text
        assert "waiting" in line and "░" in line
        await wait_until(pilot, lambda: rows("streaming"), what="a request streaming")
        assert screen.runner is not None and "█" in timeline.render_line(
            timeline.records.index(timeline.get(rows("streaming")[0]))).text
        await wait_until(pilot, lambda: rows("ok") and timeline.num_live, what="one done while others run")
        assert screen.runner is not None and screen.done < 6
        await wait_until(pilot, lambda: screen.runner is None and screen.last_result is not None,
                         what="the bench to finish")
        assert len(timeline.records) == 6 and all(r.ok for r in timeline.records) and timeline.num_live == 0
        assert {r.request_id for r in timeline.records} == {
            r.request_id for r in screen.last_result.points[0].records}


async def attach(pilot, app, url):
    handle = app.session.attach(url)
    await wait_until(pilot, lambda: handle.state == "ready", what="the mock server ready")
    return handle


@pytest.mark.asyncio
async def test_a_bench_runs_to_100_percent_and_is_saved_like_dyno_bench(mock_server, results_dir):
    session = Session(results_dir=results_dir, slos=SloSet.from_texts(["ttft_p99=10s", "itl_p50=1ms"]))
    seen = []
    session.subscribe(lambda kind, payload: seen.append(payload) if kind == "request" else None)
    app = DynoApp(session, first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        handle = await attach(pilot, app, mock_server.base_url)
        screen = app.screen
        screen.show_target()
        screen.query_one("#num-prompts").value = "12"
        screen.query_one("#values").value = "4"
        await pilot.click("#start")
        await wait_until(pilot, lambda: screen.runner is None and screen.last_result is not None,
                         what="the bench to finish")
        assert screen.query_one("#progress").percentage == 1.0
        timeline = screen.query_one(RequestTimeline)
        assert len(timeline.records) == 12 and all(r.ok for r in timeline.records)
        timeline.focus()
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: f"request #{timeline.records[1].index} " in plain(screen.query_one("#detail")),
                         what="the chosen request's details")
        assert "token gaps (7)" in plain(screen.query_one("#detail"))
        summary_text = plain(screen.query_one("#summary"))
    # Saved as `dyno bench --result-dir` saves: summary.json, requests.jsonl, summary.csv, points/.
    (run_dir,) = [p for p in results_dir.iterdir() if p.name.startswith("bench-")]
    summary = read_summary(run_dir)
    assert [p["completed"] for p in summary["points"]] == [12]
    assert summary["points"][0]["point"] == "concurrency=4"
    assert len((run_dir / REQUESTS_FILE).read_text().splitlines()) == 12
    assert (run_dir / "summary.csv").exists() and (run_dir / "points" / "concurrency-4.json").exists()
    assert f"saved in {run_dir}" in summary_text.replace("\n", "")
    # The session SLOs: ttft p99 under 10 s holds, itl p50 under 1 ms does not (mock ITL 5 ms).
    assert "ttft_p99" in summary_text and "PASS" in summary_text and "FAIL" in summary_text
    assert summary["points"][0]["slos"]  # passed to loadgen: goodput counted
    # Every finished request went through session.record with the run id.
    assert len(seen) == 12 and {p["run_id"] for p in seen} == {summary["run_id"]}
    assert {p["server_id"] for p in seen} == {handle.id}
    assert json.loads(json.dumps(seen[0]))["request_id"].startswith(summary["run_id"])


@pytest.mark.asyncio
async def test_stop_ends_a_run_early_and_keeps_what_finished(mock_server, results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        await attach(pilot, app, mock_server.base_url)
        screen = app.screen
        screen.query_one("#num-prompts").value = "400"
        screen.query_one("#values").value = "1"
        await pilot.click("#start")
        await wait_until(pilot, lambda: screen.done >= 3, what="three requests")
        await pilot.click("#stop")
        await wait_until(pilot, lambda: screen.runner is None, what="the run to stop")
        assert screen.last_result.stopped
        assert 3 <= screen.done < 400
        assert screen.query_one("#progress").percentage < 1.0
        assert "stopped early" in plain(screen.query_one("#summary"))
    (run_dir,) = results_dir.iterdir()
    assert read_summary(run_dir)["points"][0]["completed"] == screen.done


@pytest.mark.asyncio
async def test_bad_input_is_a_one_line_error_not_a_crash(results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+r")  # no server selected
        await notified(pilot, app, "no server selected")
        assert screen.runner is None
        app.session.attach("http://127.0.0.1:9")  # nothing listens there
        screen.query_one("#num-prompts").value = "abc"
        await pilot.press("ctrl+r")
        await notified(pilot, app, "prompts per point 'abc': expected a whole number")
        assert screen.runner is None
        screen.query_one("#num-prompts").value = "5"
        await pilot.press("ctrl+r")  # unreachable: the worker fails, the screen says why
        await wait_until(pilot, lambda: screen.runner is None, what="the failed run")
        await pilot.pause()
        assert "bench failed" in plain(screen.query_one("#summary"))


def test_snapshot_bench_screen(snap_compare, monkeypatch, tmp_path):
    """A finished run drawn from fixed records: timeline, one request's gaps, the summary."""
    from loadgen import BenchResult, LoadPoint, PointResult, summarize

    monkeypatch.chdir(tmp_path)
    t0 = 1_800_000_000.0
    records = [record(i, ok=i != 3, t0=t0 + 0.5 * i) for i in range(8)]
    summary = summarize(records, ()) | {"point": "concurrency=2"}
    result = BenchResult({}, [PointResult(LoadPoint(concurrency=2), summary, records)],
                         result_dir=tmp_path.joinpath("results", "bench-x").relative_to(tmp_path))

    async def fill(pilot) -> None:
        screen = pilot.app.screen
        screen.total, screen.done = 8, 8
        screen.query_one("#progress").update(total=8, progress=8)
        screen.query_one(RequestTimeline).add(records)
        screen.query_one("#detail").show(records[1])
        screen.finished(result, None)
        screen.query_one(RequestTimeline).focus()
        await pilot.pause()

    app = DynoApp(Session(results_dir="results"), first_screen="bench")
    assert snap_compare(app, terminal_size=(140, 36), run_before=fill)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_bench_screen_against_a_real_dyno_serve(results_dir):
    """The default model launched through the session (small flags), a tiny bench from the form."""
    app = DynoApp(Session(results_dir=results_dir), first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        handle = app.session.launch({"max_model_len": 512, "max_num_seqs": 4, "num_gpu_blocks_override": 256})
        await wait_until(pilot, lambda: handle.state == "ready", timeout=240, what="dyno serve ready")
        screen = app.screen
        for field, value in (("#input-len", "32"), ("#output-len", "4"), ("#num-prompts", "4"), ("#values", "2")):
            screen.query_one(field).value = value
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.runner is None and screen.last_result is not None, timeout=180,
                         what="the bench to finish")
        summary = screen.last_result.summary
        assert summary["completed"] == 4 and summary["failed"] == 0
        assert 4 <= summary["total_output_tokens"] <= 16  # max_tokens 4 each; an eos may end one early
        assert screen.query_one("#progress").percentage == 1.0
        app.session.stop_all_launched()


@pytest.mark.asyncio
async def test_a_run_keeps_going_while_another_screen_is_shown(mock_server, results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="bench")
    async with app.run_test(size=(140, 40)) as pilot:
        await attach(pilot, app, mock_server.base_url)
        screen = app.screen
        screen.query_one("#num-prompts").value = "10"
        await pilot.press("ctrl+r")
        app.switch_to("servers")
        await wait_until(pilot, lambda: screen.runner is None, what="the run, while hidden")
        app.switch_to("bench")
        await pilot.pause()
        assert screen.done == 10 and len(screen.query_one(RequestTimeline).records) == 10
        assert screen.query_one("#progress").percentage == 1.0
