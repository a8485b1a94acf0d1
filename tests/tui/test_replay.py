"""Recording a session to JSONL and playing it back: step, play/pause, seek (back rebuilds),
the Monitor drawing the replayed numbers, and a missing or broken file as a one-line error."""

from __future__ import annotations

import pytest

from loadgen.scrape import parse_metrics
from tests.tui.conftest import FROZEN_T, metrics_text, wait_until
from tui import cli, promhist
from tui.app import DynoApp
from tui.recording import read_recording
from tui.replay import Replayer
from tui.session import ServerHandle, Session
from tui.slo import SloSet
from tui.widgets.metric_panel import MetricPanel


def record_session(path, seconds: int = 20) -> None:
    """A session as the app writes it: a server, one scrape a second (gen tokens +50/s, a TTFT
    histogram that turns slow at t=10 s and breaches ttft_p99=500ms), request records."""
    session = Session(path.parent, SloSet.from_texts(["ttft_p99=500ms"]), recording=path)
    handle = ServerHandle("s1", "dyno:8000", "http://127.0.0.1:8000", model="m", state="ready",
                          launched=True, started_at=FROZEN_T)
    session.servers.append(handle)
    session.record("server", handle.to_dict(), t=FROZEN_T)
    fast, slow = 0, 0
    for i in range(seconds + 1):
        t = FROZEN_T + i
        if i >= 10:
            slow += 5
        else:
            fast += 5
        text = metrics_text(50 * i, {0.1: fast, 1.0: slow})
        session.record("metrics", {"server_id": "s1", "values": parse_metrics(text),
                                   "hists": promhist.parse_histograms(text)}, t=t)
        session.record("request", {"request_id": f"r{i}", "point": "c=1", "index": i,
                                   "is_warmup": False, "scheduled_time": t - 0.3,
                                   "dispatch_time": t - 0.29, "send_time": t - 0.28,
                                   "first_token_time": t - 0.08, "end_time": t,
                                   "chunk_times": [t - 0.08, t], "chunk_tokens": [1, 1],
                                   "output_tokens": 2, "run_id": "b1"}, t=t)
    session.close()


def test_recording_roundtrip_and_replayer(tmp_path):
    path = tmp_path / "session.jsonl"
    record_session(path)
    records = read_recording(path)
    kinds = [r.kind for r in records]
    assert kinds[0] == "header" and kinds.count("metrics") == 21 and kinds.count("request") == 21
    assert "event" in kinds   # the breach was logged live, and recorded

    session = Session(tmp_path, SloSet.from_texts(["ttft_p99=500ms"]), is_replay=True)
    rp = Replayer(session, records)
    assert rp.duration_s == pytest.approx(20.0)
    store = session.telemetry.store
    assert len(store.get("s1").points) == 1 and session.selected.id == "s1"
    rp.step()
    rp.step()
    assert len(store.get("s1").points) == 3
    assert store.get("s1").latest()["gen_tps"] == pytest.approx(50.0)
    assert store.get("s1").latest()["client_ttft_p50"] == pytest.approx(200.0)
    rp.seek(rp.end)
    assert [e.kind for e in session.events.all()] == ["breach"]
    assert session.slos.verdict("s1") == "fail"
    rp.seek(rp.start + 5)                       # back: rebuilt from the start
    assert len(store.get("s1").points) == 6 and session.events.all() == []
    assert session.slos.verdict("s1") == "pass"
    assert rp.toggle() is True
    rp.tick(2.0)
    assert rp.offset_s == pytest.approx(7.0)
    rp.toggle()
    rp.tick(2.0)
    assert rp.offset_s == pytest.approx(7.0)   # paused


@pytest.mark.asyncio
async def test_replay_in_the_app(tmp_path):
    path = tmp_path / "session.jsonl"
    record_session(path)
    args = cli.make_parser().parse_args(["--replay", str(path), "--slo", "ttft_p99=500ms"])
    app = cli.make_app(args)
    async with app.run_test(size=(120, 40)) as pilot:
        assert type(app.screen).__name__ == "MonitorScreen"
        await pilot.press("end")
        value = app.screen.query_one("#m-gen_tps", MetricPanel).query_one(".value")
        assert str(value.render()) == "50.0 tok/s"
        assert "FAIL" in str(app.screen.query_one("#mon-verdict").render())
        assert "20.0s / 20.0s" in str(app.screen.query_one("#replay-bar").render())
        await pilot.press("home")
        assert app.replayer.offset_s == 0
        await pilot.press("right_square_bracket", "full_stop")
        assert app.replayer.offset_s == pytest.approx(11.0)
        await pilot.press("comma")
        assert app.replayer.offset_s == pytest.approx(10.0)
        await pilot.press("space")
        assert app.replayer.is_playing
        await wait_until(pilot, lambda: app.replayer.offset_s >= 11.0, timeout=5, what="playing")
        await pilot.press("space")
        assert not app.replayer.is_playing
        # nothing can be launched from a replay
        await pilot.press("1", "n")
        assert type(app.screen).__name__ == "ServersScreen"


def test_live_session_is_recorded(tmp_path, mock_server):
    import asyncio

    import httpx

    from tui import scraper
    path = tmp_path / "live.jsonl"
    session = Session(tmp_path, recording=path)
    handle = ServerHandle("s1", "mock", mock_server.base_url, state="ready")
    session.servers.append(handle)

    async def two_scrapes():
        async with httpx.AsyncClient() as client:
            assert await scraper.scrape_one(session, client, handle)
            assert await scraper.scrape_one(session, client, handle)
    asyncio.run(two_scrapes())
    session.close()
    records = read_recording(path)
    metrics = [r for r in records if r.kind == "metrics"]
    assert len(metrics) == 2 and "mock_generation_tokens_total" in metrics[0].payload["values"]


def test_bad_replay_file_is_one_line(tmp_path, capsys):
    assert cli.main(["--replay", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dyno tui: {tmp_path / 'nope.jsonl'}: no such recording; pass a file written by `dyno tui`"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1, "kind": "x", "payload": {}}\nnot json\n')
    assert cli.main(["--replay", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"dyno tui: {bad}:2: not a dyno tui recording line"
    assert cli.main(["--slo", "ttft_p99=soon"]) == 2
    assert "not a time" in capsys.readouterr().err
