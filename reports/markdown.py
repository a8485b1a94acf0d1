"""The report as Markdown with its figures beside it (PNG linked, SVG written too)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reports.build import Report


def write_markdown(report: Report, out: str | Path) -> Path:
    out = Path(out)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = [f"# {report.title}", ""]
    if report.problems:
        lines += ["## Problems with the inputs", ""] + [f"- {p}" for p in report.problems] + [""]
    for f in report.figures:
        f.figure.savefig(images / f"{f.name}.png", dpi=100)
        f.figure.savefig(images / f"{f.name}.svg")
        lines += [f"## {f.title}", "", f"![{f.title}](images/{f.name}.png)", ""]
    for name, table in report.tables.items():
        lines += [f"## Table: {name}", "", _table(table), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _table(df) -> str:
    cols = list(df.columns)
    rows = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)
