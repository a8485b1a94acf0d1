"""The SLO verdict line: each declared SLO with its current value, PASS/FAIL and time in
breach for one server. Screens show it at the top; it reads session.slos."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.slo import SloSet


def verdict_text(slos: SloSet, server_id: str | None, now: float) -> Text:
    if not slos.slos:
        return Text("SLO: none declared (dyno tui --slo ttft_p99=500ms)", style="dim")
    overall = slos.verdict(server_id)
    style = {"pass": "bold green", "fail": "bold white on red"}.get(overall, "dim")
    text = Text("SLO ")
    text.append(f" {overall.upper()} ", style=style)
    for slo in slos.slos:
        st = slos.states.get((server_id, slo.key)) if server_id else None
        value = "—" if st is None or st.value_ms is None else f"{st.value_ms:.0f}ms"
        mark = "✗" if st and st.is_breached else ("✓" if st and st.value_ms is not None else "·")
        text.append(f"  {mark} {slo.key} {value} ≤ {slo.limit_ms:g}ms",
                    style="red" if st and st.is_breached else "")
        if st and st.time_in_breach(now) > 0:
            text.append(f" (breach {st.time_in_breach(now):.0f}s)", style="red")
    return text


class Verdict(Static):
    """Call `show(slos, server_id, now)` to redraw."""

    DEFAULT_CSS = """
    Verdict { height: 1; width: 1fr; }
    """

    def show(self, slos: SloSet, server_id: str | None, now: float) -> None:
        self.update(verdict_text(slos, server_id, now))
