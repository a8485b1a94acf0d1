"""CSV tables: every figure's data (each labelled line and bar, read back from its axes) and
every table of the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reports.build import Report


def write_csv(report: Report, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in report.figures:
        path = out / f"figure-{f.name}.csv"
        f.data().to_csv(path, index=False)
        written.append(path)
    for name, table in report.tables.items():
        path = out / f"table-{name}.csv"
        table.to_csv(path, index=False)
        written.append(path)
    return written
