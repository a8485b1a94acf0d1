"""One request's details, for the timeline's Enter: latencies and its inter-token gaps (so far, for a
request in flight; the screen shows it again when it ends)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from loadgen import RequestRecord
from tui.widgets.timeline import colour, outcome

BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    top = max(values) or 1.0
    return "".join(BLOCKS[min(8, int(v / top * 8))] for v in values)


def gap_lines(record: RequestRecord, per_line: int = 10) -> list[str]:
    """Inter-token gaps in ms (loadgen's ITL: a k-token chunk counts as k gaps of 1/k)."""
    gaps = [g * 1000 for g in record.itl]
    return [" ".join(f"{g:6.1f}" for g in gaps[i:i + per_line]) for i in range(0, len(gaps), per_line)]


def describe(record: RequestRecord) -> Text:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f} ms"

    text = Text()
    text.append(f"request #{record.index} ({record.request_id}) ", style="bold")
    text.append(outcome(record), style=colour(record))
    text.append(f"\nTTFT {ms(record.ttft)}  E2E {ms(record.e2el)}  TPOT {ms(record.tpot)}  "
                f"tokens in {record.input_tokens} out {record.output_tokens}")
    if record.sched_lag is not None:
        text.append(f"  sched lag {ms(record.sched_lag)}")
    if record.error:
        text.append(f"\nerror: {record.error}", style="red")
    gaps = record.itl
    if gaps:
        text.append(f"\ntoken gaps ({len(gaps)}), ms: min {min(gaps) * 1000:.1f} max {max(gaps) * 1000:.1f}\n")
        text.append(sparkline(gaps) + "\n", style="cyan")
        text.append("\n".join(gap_lines(record)))
    else:
        text.append("\nno token gaps (fewer than two chunks)")
    return text


class RequestDetail(Static):
    """Shows the request last chosen on the timeline."""

    record: RequestRecord | None = None

    def show(self, record: RequestRecord) -> None:
        self.record = record
        self.update(describe(record))
