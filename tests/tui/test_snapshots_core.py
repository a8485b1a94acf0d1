"""Snapshots of the core screens (servers, monitor, replay, help, launch form, quit, the `?`
popup), drawn from a fixed session at a frozen clock with no live data."""

from __future__ import annotations

from tests.tui.conftest import FROZEN_T, demo_session
from tests.tui.test_replay import record_session
from tui import cli
from tui.app import DynoApp

SIZE = (120, 40)


def frozen_app(results_dir, screen: str) -> DynoApp:
    return DynoApp(demo_session(results_dir), first_screen=screen, clock=lambda: FROZEN_T,
                   scrape=False)


def test_servers(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "servers"), terminal_size=SIZE)


def test_servers_failed_selected(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "servers"), press=["down"], terminal_size=SIZE)


def test_monitor(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "monitor"), terminal_size=SIZE)


def test_monitor_explain(snap_compare, results_dir):
    async def focus(pilot):
        pilot.app.screen.query_one("#m-ttft_p99").focus()
        await pilot.press("question_mark")
    assert snap_compare(frozen_app(results_dir, "monitor"), run_before=focus, terminal_size=SIZE)


def test_replay(snap_compare, tmp_path):
    path = tmp_path / "session.jsonl"
    record_session(path)
    app = cli.make_app(cli.make_parser().parse_args(["--replay", str(path), "--slo", "ttft_p99=500ms"]))
    assert snap_compare(app, press=["right_square_bracket", "right_square_bracket"], terminal_size=SIZE)


def test_help(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "help"), terminal_size=SIZE)


def test_launch_form(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "servers"), press=["n"], terminal_size=SIZE)


def test_quit_confirm(snap_compare, results_dir):
    assert snap_compare(frozen_app(results_dir, "servers"), press=["q"], terminal_size=SIZE)
