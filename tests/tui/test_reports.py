"""The Reports screen: result dirs and studies found under the results dir (and a typed path),
a report built with the reports package for a run and for a study, bad paths."""

from __future__ import annotations

import optuna
import pytest

from loadgen import BenchConfig, DatasetConfig, LoadPoint, run_bench
from tests.tui.conftest import wait_until
from tui.app import DynoApp
from tui.reports_scan import find_storages
from tui.session import Session


async def notified(pilot, app, text: str) -> None:
    """Wait until a notification containing text was shown."""
    await wait_until(pilot, lambda: any(text in n.message for n in app._notifications), what=repr(text))


@pytest.fixture
def filled(results_dir, mock_server):
    """A bench run (10 requests against the mock) and a one-trial study under the results dir."""
    run_bench(BenchConfig(base_url=mock_server.base_url, points=(LoadPoint(concurrency=2),), num_prompts=10,
                          dataset=DatasetConfig(input_len="fixed:8", output_len="fixed:8"),
                          scrape_interval_s=None, result_dir=str(results_dir / "bench-a")))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{results_dir / 'dyno-tune.db'}", study_name="s1")
    study.optimize(lambda t: t.suggest_int("max_num_seqs", 1, 8), n_trials=3)
    (results_dir / "other.db").write_bytes(b"")  # not a study: left out, and left alone
    (results_dir / "server.log").write_text("INFO started\n")  # a log, not a journal
    return results_dir


@pytest.mark.asyncio
async def test_lists_runs_and_studies_and_builds_their_reports(filled):
    app = DynoApp(Session(results_dir=filled), first_screen="reports")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.targets, what="the scan")
        assert [(t.kind, t.name) for t in screen.targets] == [("run", "bench-a"), ("study", "s1")]
        assert "10 done" in screen.targets[0].details
        table = screen.query_one("#found")
        table.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.built is not None, timeout=30, what="the run's report")
        html = filled / "reports" / "run-bench-a" / "report.html"
        assert screen.built.html == html and html.stat().st_size > 1000
        info = str(screen.query_one("#report-info").render())
        assert f"written to {html}" in info and "concurrency=2: 10 done" in info
        screen.built = None
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: screen.built is not None, timeout=30, what="the study's report")
        assert (filled / "reports" / "study-s1" / "report.html").exists()
        assert "3 trials, 3 complete" in str(screen.query_one("#report-info").render())
    assert (filled / "other.db").read_bytes() == b""  # Optuna never opened it


@pytest.mark.asyncio
async def test_a_typed_path_is_scanned_and_a_missing_one_is_an_error(filled, tmp_path):
    app = DynoApp(Session(results_dir=tmp_path / "empty"), first_screen="reports")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await pilot.pause()
        screen.query_one("#scan-path").value = str(tmp_path / "nowhere")
        screen.action_scan()
        await notified(pilot, app, "nowhere: no such file or folder")
        screen.query_one("#scan-path").value = str(filled / "dyno-tune.db")
        screen.action_scan()
        await wait_until(pilot, lambda: screen.targets, what="the typed storage")
        assert [(t.kind, t.name) for t in screen.targets] == [("study", "s1")]
        screen.action_open_report()  # nothing built yet
        await notified(pilot, app, "build a report first")


def test_only_optuna_databases_and_journals_count_as_storages(filled):
    assert [s.studies for s in find_storages(filled)] == [["s1"]]


def test_snapshot_reports_screen(snap_compare, monkeypatch, tmp_path):
    from loadgen import write_json
    from loadgen.schema import SCHEMA_VERSION, SUMMARY_FILE

    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "results" / "bench-a" / SUMMARY_FILE, {"schema_version": SCHEMA_VERSION, "points": [
        {"point": "concurrency=4", "completed": 40, "output_throughput": 321.5}]})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(storage="sqlite:///results/dyno-tune.db", study_name="s1")

    async def fill(pilot) -> None:
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.targets, what="the scan")
        screen.query_one("#found").focus()
        await pilot.pause()

    app = DynoApp(Session(results_dir="results"), first_screen="reports")
    assert snap_compare(app, terminal_size=(120, 24), run_before=fill)
