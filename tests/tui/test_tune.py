"""The Tune screen: a hand-made study opened from its storage (table, sort, Pareto front and
cursor, export in every `dyno export` format, launch as a server), a tiny study started from the
form with loadgen's mock server standing in for `dyno serve`, and bad input."""

from __future__ import annotations

import sys

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from tests.tui.conftest import wait_until
from tui.app import DynoApp
from tui.session import Session
from tui.tune_runner import FORMATS, pareto_front, trial_rows
from tui.widgets.pareto import ParetoChart
from tui.widgets.trials_table import TrialsTable
from tuner.engines import Engine
from tuner.export import SUFFIX, ExportConfig, render
from tuner.study import STUDY_ATTR

# trial: (max_num_seqs, output tok/s, TTFT p99 ms); trial 0 is the baseline, 4 failed
TRIALS = [(256, 100.0, 80.0), (32, 250.0, 120.0), (8, 180.0, 60.0), (16, 150.0, 200.0)]


async def notified(pilot, app, text: str) -> None:
    """Wait until a notification containing text was shown."""
    await wait_until(pilot, lambda: any(text in n.message for n in app._notifications), what=repr(text))


@pytest.fixture
def hand_study(tmp_path) -> str:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="hand", direction="maximize")
    study.set_user_attr(STUDY_ATTR, {"objective": {"metrics": ["output_throughput:max"], "slos": []}})
    for i, (seqs, tput, ttft) in enumerate(TRIALS):
        study.add_trial(create_trial(
            value=tput, params={"max_num_seqs": seqs}, distributions={"max_num_seqs": IntDistribution(1, 256)},
            user_attrs={"flags": {"max_model_len": 512, "max_num_seqs": seqs}, "baseline": i == 0,
                        "summary": {"output_throughput": tput, "p99_ttft_ms": ttft}}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"max_num_seqs": 64},
                                 distributions={"max_num_seqs": IntDistribution(1, 256)},
                                 user_attrs={"flags": {"max_model_len": 512, "max_num_seqs": 64},
                                             "failure_reason": "server exited with code 2 before it was ready"}))
    return storage


async def open_hand(pilot, app, storage):
    screen = app.screen
    screen.query_one("#storage").value = storage
    screen.query_one("#study-name").value = "hand"
    await pilot.click("#open")
    await wait_until(pilot, lambda: len(screen.rows) == 5, what="the study's trials")
    await pilot.pause()
    return screen


def test_pareto_front_is_the_non_dominated_complete_trials(hand_study):
    rows = trial_rows(optuna.load_study(study_name="hand", storage=hand_study))
    # #2 (180 tok/s, 60 ms) beats #0 (100, 80 ms) on both, #1 (250, 120 ms) beats #3 (150, 200 ms)
    assert [r.number for r in pareto_front(rows)] == [2, 1]
    assert rows[4].state == "FAIL" and rows[4].reason.startswith("server exited")


@pytest.mark.asyncio
async def test_open_sort_cursor_export_and_launch(hand_study, results_dir, fake_serve):
    app = DynoApp(Session(results_dir=results_dir), first_screen="tune")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_hand(pilot, app, hand_study)
        table = screen.query_one(TrialsTable)
        assert [r.number for r in table.rows_shown] == [0, 1, 2, 3, 4]
        assert "5 trials finished" in str(screen.query_one("#status").render())
        assert "best so far: #1 250" in str(screen.query_one("#status").render())
        table.focus()
        await pilot.press("s", "s")  # number -> state -> throughput (best first)
        assert table.sort_attr == "throughput" and table.sort_reverse
        assert [r.number for r in table.rows_shown] == [1, 2, 3, 0, 4]  # the failed one last
        await pilot.press("s")  # TTFT p99, fastest first
        assert [r.number for r in table.rows_shown] == [2, 0, 1, 3, 4]
        await pilot.press("S")
        assert [r.number for r in table.rows_shown] == [3, 1, 0, 2, 4]
        # The chart's cursor follows the table, and the table follows the chart.
        table.move_cursor(row=1)
        chart = screen.query_one(ParetoChart)
        await wait_until(pilot, lambda: chart.cursor == 1, what="the chart's cursor on trial 1")
        chart.focus()
        await pilot.press("left")  # trials by TTFT: 2, 0, 1, 3
        await wait_until(pilot, lambda: table.current.number == 0, what="the table's cursor on trial 0")
        assert chart.cursor == 0
        # Export trial 0 in every format: the file is what `dyno export --trial 0` prints.
        expected = ExportConfig({"max_model_len": 512, "max_num_seqs": 256}, "hand", 0,
                                {"output_throughput": 100.0})
        for fmt in FORMATS:
            screen.query_one("#format").value = fmt
            out = results_dir / "out" / f"trial0.{fmt}"
            screen.query_one("#export-path").value = str(out)
            screen.action_export()
            await wait_until(pilot, out.exists, what=f"the {fmt} export")
            assert out.read_text() == render(expected, fmt)
        screen.query_one("#format").value = "all"  # as `dyno export --format all`: a folder of files
        screen.query_one("#export-path").value = ""
        folder = results_dir / "exports" / "hand-trial-0"
        screen.action_export()
        await wait_until(pilot, lambda: any(f"wrote {folder}" == n.message for n in app._notifications),
                         what="the folder of exports")
        assert sorted(p.name for p in folder.iterdir()) == sorted(SUFFIX.values())
        assert (folder / "values.yaml").read_text() == render(expected, "helm")
        # Launch as server: the session starts it with the trial's flags, the monitor shows it.
        screen.action_launch()
        await pilot.pause()
        (handle,) = app.session.servers
        assert handle.flags["max_num_seqs"] == 256 and handle.flags["max_model_len"] == 512
        assert app.session.selected is handle and app.current_name == "monitor"
        await wait_until(pilot, lambda: handle.state == "ready", what="the launched (mock) server")
        app.session.stop_all_launched()


@pytest.mark.asyncio
async def test_bad_input_is_a_one_line_error(hand_study, results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="tune")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        screen.query_one("#study-name").value = "nope"
        screen.query_one("#storage").value = hand_study
        screen.action_open_study()
        await wait_until(pilot, lambda: any("no study 'nope'" in n.message and "(studies there: hand)" in n.message
                                            for n in app._notifications),
                         what="the missing-study error")
        screen.query_one("#server-flags").value = "--max-num-seqs lots"
        screen.action_start_study()
        screen.query_one("#server-flags").value = ""
        screen.query_one("#n-trials").value = "0"
        screen.action_start_study()
        await notified(pilot, app, "server flags: argument --max-num-seqs: invalid int value: 'lots'")
        await notified(pilot, app, "trials 0: must be at least 1")
        assert screen.runner is None
        screen.action_export()  # nothing selected
        await notified(pilot, app, "no trial selected")


class MockEngine(Engine):
    """loadgen's mock server in place of `dyno serve` (the tuner's own tests do the same)."""

    name = "mock"

    def command(self, flags, host, port):
        entry = "import sys; from loadgen.mock_server import serve; serve(sys.argv[1:])"
        return [sys.executable, "-c", entry, "--host", host, "--port", str(port), "--ttft-ms", "5",
                "--itl-ms", "1", "--output-len", "4"]


@pytest.mark.asyncio
async def test_a_tiny_study_started_from_the_form_fills_the_table(results_dir, monkeypatch):
    monkeypatch.setattr("tuner.study.make_engine", lambda name: MockEngine())
    app = DynoApp(Session(results_dir=results_dir), first_screen="tune")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        for field, value in (("#n-trials", "2"), ("#num-prompts", "6"), ("#concurrency", "2")):
            screen.query_one(field).value = value
        await pilot.click("#start")
        await wait_until(pilot, lambda: screen.runner is None and len(screen.rows) == 2, timeout=60,
                         what="two trials")
        assert [r.state for r in screen.rows] == ["COMPLETE", "COMPLETE"]
        assert screen.rows[0].is_baseline and screen.rows[0].throughput > 0
        assert "2/2 trials finished" in str(screen.query_one("#status").render())
        assert len(screen.query_one(TrialsTable).rows_shown) == 2
        assert sum(e.kind == "trial" for e in app.session.events.all()) >= 3  # started + 2 trials
    assert (results_dir / "dyno-tune.db").exists()


def test_snapshot_tune_screen(snap_compare, hand_study, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    async def fill(pilot) -> None:
        screen = pilot.app.screen
        screen.query_one("#storage").value = "sqlite:///study.db"
        screen.query_one("#study-name").value = "hand"
        screen.action_open_study()
        await wait_until(pilot, lambda: len(screen.rows) == 5, what="the study's trials")
        table = screen.query_one(TrialsTable)
        table.focus()
        table.sort_by("throughput")
        table.select_trial(2)
        await pilot.pause()

    app = DynoApp(Session(results_dir="results"), first_screen="tune")
    assert snap_compare(app, terminal_size=(140, 36), run_before=fill)
