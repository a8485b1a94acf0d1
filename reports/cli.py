"""`dyno report RUN... [--study-name N --storage URL] --out DIR`."""

from __future__ import annotations

import argparse
import sys


def report_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dyno report", description="Plots and an HTML/Markdown/CSV report from "
                                "`dyno bench` result directories and `dyno tune` studies.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="result directories of `dyno bench --result-dir`")
    p.add_argument("--study-name", default=None, help="an Optuna study to include (dyno tune's default: dyno)")
    p.add_argument("--storage", default="sqlite:///dyno-tune.db", help="the study's storage URL")
    p.add_argument("--out", required=True, help="directory for report.html, report.md, images/ and csv/")
    p.add_argument("--format", default="html,md,csv", help="comma list of html, md, csv (default all)")
    args = p.parse_args(argv)
    if not args.runs and not args.study_name:
        print("dyno report: give one or more RUN directories and/or --study-name", file=sys.stderr)
        return 2
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("html", "md", "csv")]
    if bad:
        print(f"dyno report: unknown format {bad[0]!r}; use html, md, csv", file=sys.stderr)
        return 2
    from reports.build import build_report

    report = build_report(args.runs, args.out, storage=args.storage, study_name=args.study_name,
                          formats=formats)
    for problem in report.problems:
        print(f"dyno report: {problem}", file=sys.stderr)
    if not report.figures:
        print("dyno report: nothing could be drawn from the inputs", file=sys.stderr)
        return 1
    print(f"dyno report: {len(report.figures)} figures written to {args.out}")
    return 0
