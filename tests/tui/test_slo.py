"""SLO syntax and the verdict state machine (breach, recovery, time in breach)."""

from __future__ import annotations

import pytest

from tui.slo import Slo, SloError, SloSet, parse


def test_parse_forms():
    assert parse("ttft_p99=500ms") == Slo("ttft", "p99", 500.0)
    assert parse("itl_p50=0.05s") == Slo("itl", "p50", 50.0)
    assert parse("e2el=2000") == Slo("e2el", "p99", 2000.0)   # bench syntax: p99 by default
    assert parse("tpot_mean:20") == Slo("tpot", "mean", 20.0)
    assert str(parse("ttft_p99=500ms")) == "ttft_p99<=500ms"


@pytest.mark.parametrize("text, message", [
    ("ttft_p42=1ms", "statistic 'p42'"),
    ("foo=1ms", "expected METRIC=VALUE"),
    ("ttft_p99=fast", "not a time"),
    ("ttft_p99=-5", "must be > 0"),
])
def test_bad_slo_is_one_line(text, message):
    with pytest.raises(SloError) as err:
        parse(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_breach_recover_and_time_in_breach():
    slos = SloSet.from_texts(["ttft_p99=500ms", "itl_p99=50ms"])
    assert slos.verdict("s1") == "n/a"
    assert slos.update("s1", {"ttft_p99": 400.0, "itl_p99": None}, now=100.0) == []
    assert slos.verdict("s1") == "pass"
    assert slos.update("s1", {"ttft_p99": 650.0}, now=101.0) == [("breach", "ttft_p99 650ms > 500ms")]
    assert slos.update("s1", {"ttft_p99": 700.0}, now=102.0) == []   # still in breach: no new event
    assert slos.verdict("s1") == "fail"
    st = slos.states[("s1", "ttft_p99")]
    assert st.time_in_breach(104.0) == pytest.approx(3.0)
    assert slos.update("s1", {"ttft_p99": 100.0}, now=105.0) == [("recovered", "ttft_p99 100ms <= 500ms")]
    assert st.time_in_breach(200.0) == pytest.approx(4.0)
    assert slos.verdict("s1") == "pass"
    assert slos.verdict("s2") == "n/a"   # per server


def test_add_replaces_same_key():
    slos = SloSet.from_texts(["ttft_p99=500ms"])
    slos.add("ttft_p99=200ms")
    assert [str(s) for s in slos.slos] == ["ttft_p99<=200ms"]


@pytest.mark.asyncio
async def test_declare_slo_in_the_app(results_dir):
    from tui.app import DynoApp
    from tui.session import Session

    app = DynoApp(Session(results_dir), first_screen="monitor", scrape=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        for ch in "ttft_p42=1":
            await pilot.press(ch)
        await pilot.press("enter")
        assert "statistic 'p42'" in str(app.screen.query_one("#slo-error").render())
        field = app.screen.query_one("#slo-text")
        field.value = "itl_p99=50ms"
        await pilot.press("enter")
        await pilot.pause()
        assert [str(s) for s in app.session.slos.slos] == ["itl_p99<=50ms"]
        assert app.session.events.all()[-1].text == "SLO declared: itl_p99<=50ms"
