"""A self-contained HTML page: every figure embedded as a base64 PNG data URI (opens offline)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reports.build import Report

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#111}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:12px;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.problems{color:#a00}
@media print{img{page-break-inside:avoid}}"""


def figure_png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render_html(report: Report) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    if report.problems:
        parts.append("<h2>Problems with the inputs</h2><ul class='problems'>")
        parts += [f"<li>{html.escape(p)}</li>" for p in report.problems]
        parts.append("</ul>")
    for f in report.figures:
        data = base64.b64encode(figure_png(f.figure)).decode("ascii")
        parts.append(f"<h2>{html.escape(f.title)}</h2><img alt='{html.escape(f.title)}' "
                     f"id='fig-{html.escape(f.name)}' src='data:image/png;base64,{data}'>")
    for name, table in report.tables.items():
        parts.append(f"<h2>Table: {html.escape(name)}</h2>")
        parts.append(table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(render_html(report), encoding="utf-8")
    return path
