"""Factories for tuner tests: a hand-made study (no server) in a temporary SQLite file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.study import STUDY_ATTR
from tuner.trial import free_port


def make_summary(completed: int, goodput: float, output_tokens: int, throughput: float = 0.0) -> dict[str, Any]:
    return {"completed": completed, "request_goodput": goodput, "request_throughput": goodput,
            "total_output_tokens": output_tokens, "output_throughput": throughput}


def add_trial(study: optuna.Study, value: float, summary: dict | None, flags: dict,
              state: TrialState = TrialState.COMPLETE, **attrs: Any) -> None:
    params = {k: v for k, v in flags.items() if k == "max_num_seqs"}
    study.add_trial(create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None, params=params,
        distributions={"max_num_seqs": IntDistribution(1, 256)} if params else {},
        user_attrs={"flags": flags, **({"summary": summary} if summary else {}), **attrs}))


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def hand_study(storage: str) -> optuna.Study:
    """Three trials: baseline 2 req/s, trial 1 5 req/s (the best), trial 2 failed."""
    study = optuna.create_study(storage=storage, study_name="hand", direction="maximize")
    study.set_user_attr(STUDY_ATTR, {"objective": {"metrics": ["output_throughput:max"], "slos": []}})
    add_trial(study, 100.0, make_summary(40, 2.0, 4000, 100.0), {"max_model_len": 512}, baseline=True)
    add_trial(study, 250.0, make_summary(50, 5.0, 5000, 250.0),
              {"max_model_len": 512, "max_num_seqs": 32, "enable_prefix_caching": True})
    add_trial(study, 0.0, None, {"max_model_len": 512, "max_num_seqs": 64}, state=TrialState.FAIL,
              failure_reason="server exited with code 2 before it was ready")
    return study


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        # The project's own test setup installs Debian's server where it can.
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on loopback; skipped with the reason where there can be none."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed and `apt-get install postgresql` did not work here")
    data = Path(tempfile.mkdtemp(prefix="dyno-pg-"))
    # PostgreSQL refuses to run as root: as root, run it as the postgres user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"), "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {e}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(data, ignore_errors=True)
