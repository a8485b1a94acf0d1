"""`dyno bench` end to end: result files, modes, and one-line errors that keep finished work."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from loadgen import read_records, read_summary
from loadgen.cli import main, parse_slo
from loadgen.metrics import SLO

SMALL = ["--random-input-len", "20", "--random-output-len", "5", "--no-progress", "--no-scrape"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_result_dir_has_jsonl_summary_csv_and_vllm_keys(mock_factory, tmp_path, capsys):
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5)
    out = tmp_path / "run"
    rc = main(["--base-url", mock.base_url, "--num-prompts", "8", "--max-concurrency", "2", "4",
               "--slo", "ttft=500ms", "--result-dir", str(out), "--warmup", "2", *SMALL])
    assert rc == 0
    summary = read_summary(out)
    assert [p["point"] for p in summary["points"]] == ["concurrency=2", "concurrency=4"]
    assert summary["config"]["model"] == "mock"
    records = read_records(out / "requests.jsonl")
    assert len(records) == 2 * (8 + 2) and sum(r.is_warmup for r in records) == 4
    flat = json.loads((out / "points" / "concurrency-2.json").read_text())
    assert flat["completed"] == 8 and flat["schema_version"] == 1 and "config" in flat
    assert flat["request_goodput"] == pytest.approx(flat["request_throughput"])
    assert "p99_9_e2el_ms" in flat and "median_tpot_ms" in flat
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("schema_version,point,completed")
    printed = capsys.readouterr().out
    assert "Load points" in printed and "concurrency=4" in printed


def test_rebuild_from_jsonl(mock_factory, tmp_path, capsys):
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5)
    out = tmp_path / "run"
    assert main(["--base-url", mock.base_url, "--num-prompts", "6", "--request-rate", "50",
                 "--result-dir", str(out), *SMALL]) == 0
    assert main(["--rebuild", str(out)]) == 0
    rebuilt = json.loads((out / "rebuilt_summary.json").read_text())["points"][0]
    original = read_summary(out)["points"][0]
    for key in ("completed", "duration", "mean_ttft_ms", "p99_itl_ms", "output_throughput"):
        assert rebuilt[key] == pytest.approx(original[key])


def test_unreachable_server_is_one_line(capsys):
    rc = main(["--base-url", f"http://127.0.0.1:{free_port()}", *SMALL])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "cannot reach" in err and "--base-url" in err


def test_missing_api_key_is_one_line(mock_factory, capsys):
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5, api_key="sesame")
    assert main(["--base-url", mock.base_url, "--api-key", "", *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert "401" in err and "--api-key" in err and err.count("\n") == 0
    assert main(["--base-url", mock.base_url, "--api-key", "sesame", "--num-prompts", "2", *SMALL]) == 0


def test_bad_dataset_is_one_line(mock_factory, tmp_path, capsys):
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5)
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\nnot json at all\n')
    assert main(["--base-url", mock.base_url, "--dataset-name", "jsonl", "--dataset-path", str(bad), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert "line 2: not JSON" in err and err.count("\n") == 0


def test_zero_rate_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--request-rate", "0", *SMALL])
    assert exc.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def test_slo_parsing():
    assert parse_slo("ttft=500ms") == SLO("ttft", 0.5)
    assert parse_slo("tpot=0.05s") == SLO("tpot", 0.05)
    assert parse_slo("e2el:2000") == SLO("e2el", 2.0)  # vLLM's --goodput form, in ms


def test_server_dying_midway_keeps_finished_work(mock_factory, tmp_path):
    """The server is killed mid-run: finished requests are in the JSONL, the rest are
    recorded as failures, and the summary is still written."""
    from loadgen import MockPacing, MockServer

    out = tmp_path / "run"
    with MockServer(MockPacing(ttft_ms=20, itl_ms=5, output_len=5)) as mock:
        cmd = [sys.executable, "-m", "dyno", "bench", "--base-url", mock.base_url, "--request-rate",
               "50", "--arrival", "constant", "--num-prompts", "200", "--result-dir", str(out), *SMALL]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_lines(out / "requests.jsonl", 20)
    _, err = proc.communicate(timeout=60)
    records = read_records(out / "requests.jsonl")
    ok = [r for r in records if r.ok]
    assert len(ok) >= 20 and len(records) < 200
    assert {r.error_kind for r in records if not r.ok} <= {"connect", "disconnected"}
    point = read_summary(out)["points"][0]
    assert point["completed"] == len(ok) and "stop_reason" in point


def test_interrupt_keeps_finished_work(mock_factory, tmp_path):
    mock = mock_factory(ttft_ms=20, itl_ms=5, output_len=5)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dyno", "bench", "--base-url", mock.base_url, "--max-concurrency",
           "2", "--num-prompts", "100000", "--result-dir", str(out), *SMALL]
    # SIGINT as at a terminal: a suite started in the background (`.ci/run &`) ignores SIGINT,
    # the child would inherit that, and Python keeps an inherited SIG_IGN (no KeyboardInterrupt).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_lines(out / "requests.jsonl", 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    point = read_summary(out)["points"][0]
    assert point["stop_reason"] == "interrupted"
    assert point["completed"] == sum(r.ok for r in read_records(out / "requests.jsonl")) >= 10


def _wait_for_lines(path, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines")
