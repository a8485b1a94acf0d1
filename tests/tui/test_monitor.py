"""The Monitor's numbers: histogram quantiles and counter rates from /metrics text (exact
values), then the live screen against loadgen's mock server under real load: numbers move,
the client's series appear, an SLO breach is flagged and marked, `?` explains a number, and a
/metrics that stops answering shows as unreachable."""

from __future__ import annotations

import pytest

from loadgen import MockPacing, MockServer
from loadgen.scrape import parse_metrics
from tests.tui.conftest import drive_load, metrics_text, wait_until
from tui import promhist
from tui.app import DynoApp
from tui.screens.help import ExplainScreen
from tui.session import Session
from tui.slo import SloSet
from tui.series import MetricsStore
from tui.widgets.metric_panel import MetricPanel


def test_quantile_interpolates_like_promql():
    buckets = [[0.1, 10], [0.2, 30], [0.5, 40], [float("inf"), 40]]
    assert promhist.quantile(0.5, buckets) == pytest.approx(0.15)     # rank 20: half-way in (0.1, 0.2]
    assert promhist.quantile(0.25, buckets) == pytest.approx(0.1)
    assert promhist.quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * (39.6 - 30) / 10)
    assert promhist.quantile(0.5, [[0.1, 0], [float("inf"), 0]]) is None
    assert promhist.quantile(0.99, [[0.1, 1], [float("inf"), 5]]) == pytest.approx(0.1)  # +Inf bucket


def test_subtract_and_counter_reset():
    new, old = [[0.1, 5], [float("inf"), 9]], [[0.1, 2], [float("inf"), 3]]
    assert promhist.subtract(new, old) == [[0.1, 3], [float("inf"), 6]]
    assert promhist.subtract(old, new) == old           # reset (restart): take the new one whole
    assert promhist.per_bucket([[0.1, 3], [float("inf"), 6]]) == [(0.1, 3), (float("inf"), 3)]


def test_series_rates_blocks_hit_rate_and_windowed_percentiles():
    store = MetricsStore()
    a = metrics_text(100, {0.05: 10, 0.5: 0}, hits=0, queries=0)
    b = metrics_text(350, {0.05: 10, 0.5: 20}, usage=0.25, free=300, hits=30, queries=120,
                     prompt_tokens=64)
    store.add("s1", 1000.0, parse_metrics(a), promhist.parse_histograms(a))
    p = store.add("s1", 1002.0, parse_metrics(b), promhist.parse_histograms(b))
    assert p["gen_tps"] == pytest.approx(125.0)          # (350 - 100) / 2 s
    assert p["prompt_tps"] == pytest.approx(32.0)
    assert (p["running"], p["waiting"], p["kv_usage_pct"]) == (2, 1, 25.0)
    assert (p["kv_free_blocks"], p["kv_used_blocks"]) == (300, 100)   # 300 * .25 / .75
    assert p["prefix_hit_pct"] == pytest.approx(25.0)   # 30 / 120
    # window = the 20 observations between the two scrapes, all in (0.05, 0.5]
    assert p["ttft_n"] == 20
    assert p["ttft_p50"] == pytest.approx((0.05 + 0.45 * 0.5) * 1000)
    assert store.get("s1").series("gen_tps") == [(1002.0, pytest.approx(125.0))]


def _panel_value(app, key: str) -> str:
    return str(app.screen.query_one(f"#m-{key}", MetricPanel).query_one(".value").render())


@pytest.mark.asyncio
async def test_live_monitor_under_load_with_slo_breach(mock_server, results_dir):
    session = Session(results_dir, SloSet.from_texts(["ttft_p99=1ms"]))   # 40 ms TTFT: a breach
    app = DynoApp(session, first_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        handle = session.attach(mock_server.base_url)
        await wait_until(pilot, lambda: handle.state == "ready", what="attach")
        store = session.telemetry.store
        await wait_until(pilot, lambda: store.get(handle.id) is not None, what="a first scrape")
        # ~85 ms a request, 2 at a time: a few seconds of load, several scrapes inside it
        thread = drive_load(mock_server.base_url, session, num_prompts=60, concurrency=2)

        def peak(name: str) -> float:
            return max((v for _, v in store.get(handle.id).series(name)), default=0.0)

        await wait_until(pilot, lambda: peak("running") > 0, what="requests running on the server")
        await wait_until(pilot, lambda: any(e.kind == "breach" for e in session.events.all()),
                         what="an SLO breach event")
        await wait_until(pilot, lambda: peak("gen_tps") > 0, what="generation tokens/s above 0")
        thread.join(timeout=30)
        await pilot.pause(1.2)   # one redraw
        series = store.get(handle.id)
        assert series.latest()["client_ttft_p50"] == pytest.approx(40, abs=35)
        assert series.latest()["sched_lag_ms"] is not None
        assert session.slos.verdict(handle.id) == "fail"
        breach = next(e for e in session.events.all() if e.kind == "breach")
        assert breach.text.startswith("ttft_p99 ") and breach.server_id == handle.id
        assert _panel_value(app, "client_ttft_p50").endswith("ms")
        assert "FAIL" in str(app.screen.query_one("#mon-verdict").render())
        # the breach is marked on the charts' event row
        chart_text = app.screen.query_one("#m-ttft_p99").query_one("Chart").render()
        assert "▲" in chart_text.plain

        app.screen.query_one("#m-gen_tps", MetricPanel).focus()
        before = len(series.series("gen_tps"))
        await pilot.press("question_mark")
        assert isinstance(app.screen, ExplainScreen)
        text = app.screen.text
        assert "vllm:generation_tokens_total" in text and "window: one scrape interval" in text
        # scraping goes on while the popup opens: the count is the one at either moment
        assert before <= int(text.rsplit("samples: ", 1)[1]) <= len(series.series("gen_tps"))
        assert before >= 2
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_metrics_that_stop_answering_show_unreachable(results_dir):
    session = Session(results_dir)
    app = DynoApp(session, first_screen="monitor")
    mock = MockServer(MockPacing()).start()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            handle = session.attach(mock.base_url)
            await wait_until(pilot, lambda: handle.state == "ready", what="attach")
            mock.stop()
            await wait_until(pilot, lambda: handle.state == "unreachable", what="unreachable")
            kinds = [e.kind for e in session.events.all()]
            assert "scrape_failed" in kinds and "unreachable" in kinds
            await pilot.pause(1.2)
            assert "[UNREACHABLE]" in str(app.screen.query_one("#mon-head").render())
    finally:
        mock.stop()
