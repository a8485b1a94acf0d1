"""build_report and `dyno report`: every figure embedded in the HTML, Markdown images, CSV of
each figure's data, and one line per bad input while the rest is still drawn."""

from __future__ import annotations

import base64
import re

import pandas as pd
from pytest import approx

from dyno.cli import main as dyno_main
from reports import build_report
from tests.reports.conftest import create_study, write_run

DATA_URI = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


def test_full_report(tmp_path, run_a, run_b, study_url):
    out = tmp_path / "out"
    report = build_report([run_a, run_b], out, storage=study_url, study_name="dyno")
    assert report.problems == []
    names = [f.name for f in report.figures]
    assert names == ["latency-cdf", "load-curves", "timeseries-a", "timeseries-b", "comparison",
                     "study-dyno-history", "study-dyno-pareto", "study-dyno-importances", "study-dyno-params"]
    html = (out / "report.html").read_text()
    images = DATA_URI.findall(html)
    assert len(images) == len(names)
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert "src='http" not in html and "<link" not in html and "<script" not in html
    md = (out / "report.md").read_text()
    for n in names:
        assert f"](images/{n}.png)" in md
        assert (out / "images" / f"{n}.png").stat().st_size > 0
        assert (out / "images" / f"{n}.svg").read_text().lstrip().startswith("<?xml")
    tput = pd.read_csv(out / "csv" / "figure-load-curves.csv")
    a = tput[(tput.axis == "Throughput vs load") & (tput.series == "a")]
    assert list(a["x"]) == [1, 2, 4] and list(a["y"]) == [10.0, 19.0, 19.5]
    sat = pd.read_csv(out / "csv" / "table-saturation.csv")
    assert list(sat["point"]) == ["concurrency=2", "concurrency=2"]
    comp = pd.read_csv(out / "csv" / "table-comparison.csv")
    ratio = comp[(comp.point == "concurrency=4") & (comp.metric == "output_throughput") & (comp.run == "b")]
    assert float(ratio["ratio"].iloc[0]) == approx(41.0 / 19.5)
    trials = pd.read_csv(out / "csv" / "table-study-dyno-trials.csv")
    assert list(trials["chosen"]) == [False, False, False, False, True, False]
    imp = pd.read_csv(out / "csv" / "figure-study-dyno-importances.csv")
    assert set(imp["x"]) == {"max-num-seqs", "kv-cache-dtype"}


def test_cli_bad_inputs_one_line_each(tmp_path, run_a, capsys):
    empty = write_run(tmp_path, "empty", records=False, summary=False, server=False)
    (empty / "requests.jsonl").write_text("")
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    create_study(url, failed_only=True)
    out = tmp_path / "out"
    rc = dyno_main(["report", str(run_a), str(empty), str(tmp_path / "nope"), "--study-name", "dyno",
                    "--storage", url, "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("dyno report: ") for line in err)
    assert any("nope: no such result directory" in line for line in err)
    assert any("empty run" in line for line in err)
    assert any("missing summary.json" in line for line in err)
    assert any("no complete trial" in line for line in err)
    html = (out / "report.html").read_text()
    assert "empty run" in html
    # run a's figures are still drawn, and the failed study's figures say why they are empty
    assert len(DATA_URI.findall(html)) == 6
    for name in ("latency-cdf", "load-curves", "timeseries-a", "study-dyno-history", "study-dyno-pareto",
                 "study-dyno-importances"):
        assert f"id='fig-{name}'" in html


def test_cli_nothing_to_draw(tmp_path, capsys):
    rc = dyno_main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "no such result directory" in err and "nothing could be drawn" in err


def test_cli_missing_study_and_usage(tmp_path, run_a, capsys):
    rc = dyno_main(["report", str(run_a), "--study-name", "x", "--storage", f"sqlite:///{tmp_path / 'n.db'}",
                    "--out", str(tmp_path / "o"), "--format", "csv"])
    assert rc == 0
    assert "study 'x': no study 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.html").exists() and (tmp_path / "o" / "csv").is_dir()
    assert dyno_main(["report", "--out", str(tmp_path / "o")]) == 2
