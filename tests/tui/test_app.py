"""The app shell: a key and a palette entry for every screen, the help screen, quitting
without launched servers, `dyno tui` in the dispatcher, and the idle-CPU bound."""

from __future__ import annotations

import gc
import time

import pytest

from dyno.cli import COMMANDS
from tui.app import SCREEN_KEYS, DynoApp
from tui.session import Session

SCREEN_CLASSES = {"servers": "ServersScreen", "monitor": "MonitorScreen", "bench": "BenchScreen",
                  "compare": "CompareScreen", "tune": "TuneScreen", "reports": "ReportsScreen",
                  "help": "HelpScreen"}
IDLE_S = 3.0
IDLE_CPU_BOUND = 0.10   # an idle dashboard uses under 10% of one core


def test_dispatcher_knows_tui():
    assert COMMANDS["tui"][:2] == ("tui.cli", "main")


@pytest.mark.asyncio
async def test_keys_switch_screens_and_back(results_dir):
    app = DynoApp(Session(results_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        assert type(app.screen).__name__ == "ServersScreen"
        for name, (_, fkey, _) in SCREEN_KEYS.items():   # function keys work from anywhere
            await pilot.press(fkey)
            assert type(app.screen).__name__ == SCREEN_CLASSES[name], name
        await pilot.press("escape")               # help -> back to the previous screen
        assert type(app.screen).__name__ == "ReportsScreen"
        await pilot.press("f3")                   # Monitor: nothing to type into, digits switch
        for key, cls in (("1", "ServersScreen"), ("2", "MonitorScreen"), ("1", "ServersScreen")):
            await pilot.press(key)
            assert type(app.screen).__name__ == cls
        await pilot.press("a", "8")               # in the attach field a digit is typed
        assert app.screen.query_one("#attach-url").value == "8"
        assert type(app.screen).__name__ == "ServersScreen"
        app.switch_to("monitor")
        await pilot.pause()
        assert type(app.screen).__name__ == "MonitorScreen"


@pytest.mark.asyncio
async def test_palette_has_every_screen_and_action(results_dir):
    app = DynoApp(Session(results_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {f"Go to {t}" for _, _, t in SCREEN_KEYS.values()} <= titles
        assert {"Launch a server", "Attach to a URL", "Stop the selected server",
                "Restart the selected server", "Find local servers"} <= titles
        await pilot.press("ctrl+p")
        for ch in "Go to Monitor":
            await pilot.press(ch if ch != " " else "space")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "MonitorScreen"
        monitor_titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Explain the focused number" in monitor_titles


@pytest.mark.asyncio
async def test_help_lists_keys(results_dir):
    app = DynoApp(Session(results_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        from tui.screens.help import keys_table
        from rich.console import Console
        console = Console(width=120, record=True)
        console.print(keys_table())
        text = console.export_text()
        assert app.screen.query_one("#help-keys").visual is not None
        for key in ("1 … 6", "F2 … F7", "F1", "ctrl+p", "Servers: n", "Replay: space"):
            assert key in text


@pytest.mark.asyncio
async def test_quit_without_launched_servers_exits_at_once(results_dir):
    app = DynoApp(Session(results_dir))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running


@pytest.mark.asyncio
@pytest.mark.parametrize("screen", ["monitor"])   # the busier screen: 16 charts
async def test_idle_dashboard_cpu(results_dir, screen):
    """CPU time of the app's thread (its event loop: timers, refresh, scraping) while it sits
    idle for 3 s: under 10% of one core. Thread time, not process time, so that threads left
    by earlier tests in this process don't count."""
    app = DynoApp(Session(results_dir), first_screen=screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(1.5)   # past start-up and the first discovery
        # Earlier tests leave a large heap in this process; freezing it keeps their objects
        # out of the garbage collector's passes, which would otherwise be billed to the app.
        gc.collect()
        gc.freeze()
        try:
            cpu0, wall0 = time.thread_time(), time.monotonic()
            await pilot.pause(IDLE_S)
            cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
        finally:
            gc.unfreeze()
    assert cpu / wall < IDLE_CPU_BOUND, f"idle {screen}: {cpu:.2f}s CPU in {wall:.1f}s"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from tui import cli
    from tui.app import DynoApp

    assert set(cli.SCREENS) == set(DynoApp.SCREENS)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["--results-dir", str(blocker / "sub")]) == 2   # a file where a dir must go
    err = capsys.readouterr().err.strip()
    assert err.startswith("dyno tui: ") and err.endswith("pass a writable --results-dir")
    assert "\n" not in err
    with pytest.raises(SystemExit):
        cli.main(["--screen", "nowhere"])
    assert "invalid choice: 'nowhere'" in capsys.readouterr().err
