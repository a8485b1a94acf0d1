"""The Compare screen: two mock servers of different speeds under the same workload (the
difference column's sign and value), two saved result dirs (exact numbers), bad input."""

from __future__ import annotations

import pytest

from loadgen import MockPacing, MockServer, write_json
from loadgen.schema import SCHEMA_VERSION, SUMMARY_FILE
from tests.tui.conftest import wait_until
from tui.app import DynoApp
from tui.compare_table import compare
from tui.session import Session


async def notified(pilot, app, text: str) -> None:
    """Wait until a notification containing text was shown."""
    await wait_until(pilot, lambda: any(text in n.message for n in app._notifications), what=repr(text))


def test_difference_is_b_minus_a_with_percent_of_a():
    rows = {r.key: r for r in compare({"output_throughput": 200.0, "failed": 0, "median_ttft_ms": 50.0},
                                      {"output_throughput": 150.0, "failed": 2, "median_ttft_ms": 75.0})}
    assert (rows["output_throughput"].diff, rows["output_throughput"].pct) == (-50.0, -25.0)
    assert (rows["median_ttft_ms"].diff, rows["median_ttft_ms"].pct) == (25.0, 50.0)
    assert rows["failed"].diff == 2 and rows["failed"].pct is None  # no percent of zero
    assert rows["p99_ttft_ms"].a is None and rows["p99_ttft_ms"].diff is None


@pytest.mark.asyncio
async def test_two_servers_under_the_same_workload(results_dir):
    with MockServer(MockPacing(ttft_ms=5, itl_ms=1, output_len=8)) as fast, \
            MockServer(MockPacing(ttft_ms=80, itl_ms=10, output_len=8)) as slow:
        app = DynoApp(Session(results_dir=results_dir), first_screen="compare")
        async with app.run_test(size=(140, 40)) as pilot:
            a, b = app.session.attach(fast.base_url), app.session.attach(slow.base_url)
            screen = app.screen
            screen.action_refresh_sources()
            await wait_until(pilot, lambda: len(screen.sources) == 2, what="both servers listed")
            screen.query_one("#side-a").value = f"server:{a.id}"
            screen.query_one("#side-b").value = f"server:{b.id}"
            screen.query_one("#num-prompts").value = "8"
            screen.query_one("#concurrency").value = "2"
            await pilot.click("#run")
            await wait_until(pilot, lambda: screen.rows, timeout=30, what="the comparison")
            rows = {r.key: r for r in screen.rows}
            assert rows["completed"].a == rows["completed"].b == 8
            # B is the slow one: higher latencies (positive diff), lower throughput (negative).
            for key in ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "median_e2el_ms"):
                assert rows[key].diff > 0 and rows[key].pct > 0, key
            for key in ("request_throughput", "output_throughput"):
                assert rows[key].diff < 0 and rows[key].pct < 0, key
            r = rows["median_ttft_ms"]
            assert r.diff == pytest.approx(r.b - r.a) and r.pct == pytest.approx((r.b - r.a) / r.a * 100)
            table = screen.query_one("#compare-table")
            assert table.get_row("median_ttft_ms")[3].startswith("[red]+")  # worse: red
            assert table.get_row("output_throughput")[3].startswith("[red]-")
    # Each side's run is saved like a `dyno bench` run.
    assert sorted(p.name.split("-")[1] for p in results_dir.iterdir()) == ["A", "B"]
    assert all((p / SUMMARY_FILE).exists() for p in results_dir.iterdir())


def saved_run(path, throughput: float, ttft: float) -> None:
    write_json(path / SUMMARY_FILE, {"schema_version": SCHEMA_VERSION, "config": {}, "points": [
        {"point": "concurrency=4", "completed": 10, "failed": 0, "output_throughput": throughput,
         "median_ttft_ms": ttft}]})


@pytest.mark.asyncio
async def test_two_saved_result_dirs(results_dir):
    saved_run(results_dir / "old", 100.0, 40.0)
    saved_run(results_dir / "new", 125.0, 30.0)
    app = DynoApp(Session(results_dir=results_dir), first_screen="compare")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.sources) == 2, what="the saved runs listed")
        assert set(screen.sources) == {f"dir:{results_dir / 'old'}", f"dir:{results_dir / 'new'}"}
        screen.query_one("#side-a").value = f"dir:{results_dir / 'old'}"
        screen.query_one("#side-b").value = f"dir:{results_dir / 'new'}"
        await pilot.click("#run")
        await wait_until(pilot, lambda: screen.rows, what="the comparison")
        table = screen.query_one("#compare-table")
        assert table.get_row("output_throughput") == ["out tok/s", "100.0", "125.0", "[green]+25.0[/]",
                                                      "[green]+25.0%[/]"]
        assert table.get_row("median_ttft_ms") == ["TTFT p50 ms", "40.0", "30.0", "[green]-10.0[/]",
                                                   "[green]-25.0%[/]"]
        assert table.get_row("p99_ttft_ms")[1:] == ["-", "-", "-", "-"]


@pytest.mark.asyncio
async def test_bad_choices_are_a_one_line_error(results_dir):
    app = DynoApp(Session(results_dir=results_dir), first_screen="compare")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        screen.action_run()
        await notified(pilot, app, "pick both A and B")
        assert not screen.rows


def test_snapshot_compare_screen(snap_compare, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    saved_run(tmp_path / "results" / "old", 100.0, 40.0)
    saved_run(tmp_path / "results" / "new", 125.0, 30.0)

    async def fill(pilot) -> None:
        screen = pilot.app.screen
        await wait_until(pilot, lambda: len(screen.sources) == 2, what="the saved runs listed")
        screen.query_one("#side-a").value = "dir:results/old"
        screen.query_one("#side-b").value = "dir:results/new"
        screen.action_run()
        await wait_until(pilot, lambda: screen.rows, what="the comparison")
        screen.query_one("#compare-table").focus()
        await pilot.pause()

    app = DynoApp(Session(results_dir="results"), first_screen="compare")
    assert snap_compare(app, terminal_size=(120, 30), run_before=fill)


class PacedEngine:
    """A stand-in for `dyno serve`: loadgen's mock, slow when the config says max_num_seqs=1."""

    name = "mock"
    health_path = "/health"

    def command(self, flags, host, port):
        import sys
        pacing = MockPacing(ttft_ms=80 if flags.get("max_num_seqs") == 1 else 5, itl_ms=2, output_len=4)
        entry = "import sys; from loadgen.mock_server import serve; serve(sys.argv[1:])"
        return [sys.executable, "-c", entry, "--host", host, "--port", str(port), *pacing.to_args()]


@pytest.mark.asyncio
async def test_two_configs_of_a_study_each_launched_for_the_same_workload(results_dir, monkeypatch):
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import create_trial

    monkeypatch.setattr("tui.compare_sources.make_engine", lambda name: PacedEngine())
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results_dir.mkdir(parents=True)
    url = f"sqlite:///{results_dir / 'dyno-tune.db'}"
    study = optuna.create_study(storage=url, study_name="st", direction="maximize")
    for seqs in (256, 1):
        study.add_trial(create_trial(value=1.0, params={"max_num_seqs": seqs},
                                     distributions={"max_num_seqs": IntDistribution(1, 256)},
                                     user_attrs={"flags": {"max_num_seqs": seqs}}))
    app = DynoApp(Session(results_dir=results_dir), first_screen="compare")
    async with app.run_test(size=(140, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.sources) == 2, what="the study's configs")
        assert screen.sources[f"trial:{url}:st:1"].label == "config: st #1 (max_num_seqs=1)"
        screen.query_one("#side-a").value = f"trial:{url}:st:0"
        screen.query_one("#side-b").value = f"trial:{url}:st:1"
        screen.query_one("#num-prompts").value = "6"
        screen.query_one("#concurrency").value = "2"
        screen.action_run()
        await wait_until(pilot, lambda: screen.rows, timeout=60, what="the comparison")
        rows = {r.key: r for r in screen.rows}
        assert rows["completed"].a == rows["completed"].b == 6
        assert rows["median_ttft_ms"].diff > 50 and rows["output_throughput"].diff < 0
    # Each config ran as a tuner trial does: its own server (stopped), log and load files.
    logs = sorted(p.name.split("-")[1] for p in results_dir.glob("compare-*-config-*") if (p / "server.log").exists())
    assert logs == ["A", "B"]
