"""The Servers screen: the launch form (built from engine.args, validated before launch),
launching / stopping / restarting through the session (a fast fake `dyno serve`), a server
that dies shown failed with its last log lines, attaching, and one real `dyno serve` on the
default model watched under load until an SLO breach is flagged, then stopped."""

from __future__ import annotations

import pytest

from tests.tui.conftest import drive_load, wait_until
from tui.app import DynoApp
from tui.flag_form import grouped
from tui.screens.launch_form import LaunchForm
from tui.session import Session
from tui.slo import SloSet


def test_form_groups_come_from_engine_args():
    groups = dict(grouped())
    assert [f.name for f in groups["quick"]][:3] == ["model", "port", "max_num_seqs"]
    assert "lora" not in groups                     # refused flags are not offered
    assert "gpu_memory_utilization" in {f.name for f in groups["memory"]}


async def _open_form(pilot, app) -> LaunchForm:
    await pilot.press("1", "n")
    await wait_until(pilot, lambda: isinstance(app.screen, LaunchForm), what="the launch form")
    return app.screen


@pytest.mark.asyncio
async def test_bad_flag_value_shows_one_line_and_launches_nothing(results_dir):
    session = Session(results_dir)
    app = DynoApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await _open_form(pilot, app)
        form.set_value("max_num_seqs", "8")
        form.set_value("max_num_batched_tokens", "4")   # engine.args' rule: >= max_num_seqs
        await pilot.press("ctrl+l")
        error = str(form.query_one("#launch-error").render())
        assert error == ("--max-num-batched-tokens (4) must be at least --max-num-seqs (8); "
                         "raise it or lower --max-num-seqs")
        form.set_value("max_num_seqs", "many")
        await pilot.press("ctrl+l")
        assert str(form.query_one("#launch-error").render()) == "--max-num-seqs: 'many' is not a int"
        assert app.screen is form and session.servers == []
        await pilot.press("escape")
        assert session.servers == []


@pytest.mark.asyncio
async def test_launch_stop_restart_and_dead_server(results_dir, fake_serve):
    session = Session(results_dir)
    app = DynoApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await _open_form(pilot, app)
        form.set_value("max_num_seqs", "4")
        await pilot.click("#launch")
        await wait_until(pilot, lambda: len(session.servers) == 1, what="a server")
        handle = session.servers[0]
        # the fake server may already answer by the time the list shows it
        assert handle.launched and handle.flags["max_num_seqs"] == 4 and handle.state in ("starting", "ready")
        await wait_until(pilot, lambda: handle.state == "ready", what="ready")
        await pilot.pause(1.1)
        row = app.screen.query_one("#srv-table").get_row(handle.id)
        assert row[2].plain == "ready" and row[5] == str(handle.port) and row[6] == "launched"

        await pilot.press("r")
        await wait_until(pilot, lambda: any(e.kind == "restart" for e in session.events.all()), what="restart")
        await wait_until(pilot, lambda: handle.state == "ready" and handle.proc is not None, what="ready again")
        proc = handle.proc
        await pilot.press("x")
        assert handle.state == "stopped"
        await wait_until(pilot, lambda: proc.poll() is not None, what="the process to end")

        # a server that dies while starting: failed, with its last log lines
        dead = session.launch({"fail": True})
        session.select(dead.id)
        await wait_until(pilot, lambda: dead.state == "failed", what="failed")
        failed = next(e for e in session.events.all() if e.kind == "failed")
        assert "exited with code 3" in failed.text and "error: out of blocks" in failed.text
        await pilot.pause(1.1)
        log_lines = list(app.screen.query_one("#srv-log").lines)
        assert log_lines[-2:] == ["loading model", "error: out of blocks"]


@pytest.mark.asyncio
async def test_attach_unreachable_url_and_quit_question(results_dir, fake_serve, mock_server):
    session = Session(results_dir)
    app = DynoApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a")
        for ch in "127.0.0.1:9":   # nothing listens on port 9
            await pilot.press(ch)
        await pilot.press("enter")
        bad = session.servers[0]
        assert bad.base_url == "http://127.0.0.1:9"
        await wait_until(pilot, lambda: bad.state == "unreachable", what="unreachable")
        good = session.attach(mock_server.base_url)
        await wait_until(pilot, lambda: good.state == "ready" and good.model == "mock", what="attach")

        launched = session.launch({})
        await wait_until(pilot, lambda: launched.state == "ready", what="launched ready")
        await pilot.press("q")
        assert type(app.screen).__name__ == "QuitConfirm"
        await pilot.press("escape")                    # cancel: still running
        assert launched.state == "ready" and app.is_running
        proc = launched.proc
        await pilot.press("q", "y")                    # stop and quit
        await wait_until(pilot, lambda: proc.poll() is not None, what="the server to stop")


@pytest.mark.asyncio
async def test_real_dyno_serve_from_the_form(results_dir):
    """The default model with small flags: ready, live numbers move under load, the SLO
    breach (TTFT p99 under 1 ms cannot hold) is flagged, then stopped."""
    session = Session(results_dir, SloSet.from_texts(["ttft_p99=1ms"]))
    app = DynoApp(session)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await _open_form(pilot, app)
        for name, value in (("max_model_len", "512"), ("max_num_seqs", "4"),
                            ("num_gpu_blocks_override", "256")):
            form.set_value(name, value)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: len(session.servers) == 1, what="a server")
        handle = session.servers[0]
        try:
            await wait_until(pilot, lambda: handle.state == "ready", timeout=240, what="dyno serve ready")
            await pilot.press("enter")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "MonitorScreen", what="monitor")
            store = session.telemetry.store
            # Load only once a first scrape is in: a rate needs a counter value from before it.
            await wait_until(pilot, lambda: bool(store.get(handle.id) and store.get(handle.id).points),
                             timeout=60, what="a first scrape")
            # small on purpose: on a busy 2-core CPU each request takes seconds
            thread = drive_load(handle.base_url, session, num_prompts=6, concurrency=2,
                                server_id=handle.id, output_len=16)

            def peak(name: str) -> float:
                series = store.get(handle.id)
                return max((v for _, v in series.series(name)), default=0.0) if series else 0.0

            await wait_until(pilot, lambda: peak("gen_tps") > 0, timeout=120,
                             what="generation tokens/s above 0")
            await wait_until(pilot, lambda: any(e.kind == "breach" for e in session.events.all()),
                             timeout=120, what="the SLO breach")
            thread.join(timeout=120)
            latest = store.get(handle.id).latest()
            assert latest["ttft_p99"] > 1.0 and latest["ttft_n"] >= 1
            assert latest["kv_free_blocks"] is not None and latest["kv_usage_pct"] is not None
            assert session.slos.verdict(handle.id) == "fail"
            await pilot.pause(1.1)
            assert "FAIL" in str(app.screen.query_one("#mon-verdict").render())
            proc = handle.proc
            await pilot.press("1", "x")
            assert handle.state == "stopped"
            await wait_until(pilot, lambda: proc.poll() is not None, timeout=20, what="the server to stop")
        finally:  # a failed check must not leave the server running for the tests after it
            session.stop_all_launched()


@pytest.mark.asyncio
async def test_quit_can_leave_launched_servers_running(results_dir, fake_serve):
    session = Session(results_dir)
    app = DynoApp(session, scrape=False)
    async with app.run_test(size=(120, 40)) as pilot:
        handle = session.launch({})
        await wait_until(pilot, lambda: handle.state == "ready", what="ready")
        proc = handle.proc
        await pilot.press("q", "l")
        await wait_until(pilot, lambda: not app.is_running, what="the app to quit")
    try:
        assert proc.poll() is None          # still serving: it logs to a file, not to our pipe
        assert handle.log and (results_dir / "tui-logs").is_dir()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
