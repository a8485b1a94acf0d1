"""Building a report from the dashboard: the reports package's build_report (what `dyno report`
runs) for one result dir or one study, into a folder under the results dir."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reports import build_report


@dataclass(frozen=True)
class ReportTarget:
    """A result dir (`run`) or a study in a storage (`study`)."""

    kind: str
    name: str
    path: Path | None = None  # result dir
    storage: str | None = None  # study storage URL
    details: str = ""

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-") or "report"


@dataclass(frozen=True)
class BuiltReport:
    target: ReportTarget
    out: Path
    html: Path
    num_figures: int
    problems: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)  # the key numbers, one line each


def build(target: ReportTarget, reports_dir: Path) -> BuiltReport:
    """Blocking (matplotlib): call it from a thread worker."""
    out = reports_dir / f"{target.kind}-{target.slug()}"
    if target.kind == "run":
        report = build_report([target.path], out)
    else:
        report = build_report([], out, storage=target.storage, study_name=target.name)
    return BuiltReport(target, out, out / "report.html", len(report.figures), list(report.problems),
                       key_numbers(report.tables))


def key_numbers(tables: dict) -> list[str]:
    """What a reader checks first: per load point throughput and TTFT; per study trials and best."""
    lines = []
    points = tables.get("points")
    if points is not None:
        for _, p in points.iterrows():
            lines.append(f"{p.get('point')}: {p.get('completed', 0):.0f} done, "
                         f"{p.get('output_throughput', float('nan')):.1f} out tok/s, "
                         f"TTFT p50 {p.get('median_ttft_ms', float('nan')):.1f} ms")
    for name, frame in tables.items():
        if name.startswith("study-") and name.endswith("-trials") and "state" in frame:
            complete = frame[frame.state == "COMPLETE"]
            best = frame[frame.get("chosen", False) == True] if "chosen" in frame else complete.head(0)  # noqa: E712
            text = f"{len(frame)} trials, {len(complete)} complete"
            if len(best):
                text += f", chosen #{int(best.number.iloc[0])} = {best.value_0.iloc[0]:.4g}"
            lines.append(text)
    return lines


def open_in_viewer(path: Path) -> None:
    """The system's viewer for the file (only when the user asks for it)."""
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
