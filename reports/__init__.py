"""dyno's reports: result files and studies -> pandas frames -> matplotlib figures -> HTML,
Markdown and CSV. Reads runs through loadgen's public schema names and studies through Optuna.

    from reports import load_runs, load_study, build_report
    runs = load_runs(["results/a", "results/b"]); runs.requests, runs.points
    build_report(["results/a"], "out", storage="sqlite:///dyno-tune.db", study_name="dyno")
"""

from reports.build import Report, build_report
from reports.load import Runs, load_runs, load_study

__all__ = ["Report", "Runs", "build_report", "load_runs", "load_study"]
