"""What is on disk under a folder: `dyno bench` result directories (a summary.json that loadgen's
schema reads) and study storages (SQLite files and journal logs with their study names)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import SUMMARY_FILE, read_summary

MAX_DEPTH = 4  # results dirs nest a little (tune/<study>/trial-N/repeat-0), not more
NOT_OPTUNA = "not an Optuna study database"
STORAGE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".log", ".journal")


@dataclass(frozen=True)
class ResultDir:
    path: Path
    points: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # why its summary could not be read

    @property
    def last(self) -> dict[str, Any]:
        return self.points[-1] if self.points else {}

    def describe(self) -> str:
        if self.problem:
            return f"unreadable: {self.problem}"
        p = self.last
        return (f"{len(self.points)} point(s), last {p.get('point', '?')}: {p.get('completed', 0)} done, "
                f"{p.get('output_throughput') or 0:.1f} tok/s")


@dataclass(frozen=True)
class StudyStorage:
    url: str
    path: Path
    studies: list[str] = field(default_factory=list)
    problem: str | None = None


def _walk(root: Path, max_depth: int):
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - root_depth >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        yield here, sorted(filenames)


def read_result_dir(path: Path) -> ResultDir:
    try:
        return ResultDir(path, list(read_summary(path).get("points") or []))
    except (OSError, ValueError) as e:
        return ResultDir(path, [], str(e).splitlines()[0])


def find_result_dirs(root: Path, max_depth: int = MAX_DEPTH) -> list[ResultDir]:
    if (root / SUMMARY_FILE).is_file():
        return [read_result_dir(root)]
    if not root.is_dir():
        return []
    return [read_result_dir(d) for d, files in _walk(root, max_depth) if SUMMARY_FILE in files]


def storage_url(path: Path) -> str:
    return str(path) if path.suffix in (".log", ".journal") else f"sqlite:///{path}"


def read_storage(path: Path) -> StudyStorage:
    """The studies in one storage file; a file that is no Optuna storage says so."""
    import optuna

    url = storage_url(path)
    if path.suffix not in (".log", ".journal") and not _is_optuna_sqlite(path):
        return StudyStorage(url, path, [], NOT_OPTUNA)
    try:
        from tuner.study import open_storage
        names = optuna.study.get_all_study_names(storage=open_storage(url))
    except Exception as e:  # noqa: BLE001 - any unreadable file is listed with its one-line reason
        return StudyStorage(url, path, [], str(e).splitlines()[0][:120])
    return StudyStorage(url, path, sorted(names))


def find_storages(root: Path, max_depth: int = MAX_DEPTH) -> list[StudyStorage]:
    if root.is_file():
        return [read_storage(root)]
    if not root.is_dir():
        return []
    found = []
    for d, files in _walk(root, max_depth):
        for name in files:
            if name.endswith(STORAGE_SUFFIXES) and (not name.endswith(".log") or _is_journal(d / name)):
                storage = read_storage(d / name)
                if storage.problem != NOT_OPTUNA:  # other databases under the folder are not ours
                    found.append(storage)
    return found


def _is_journal(path: Path) -> bool:
    """Server logs are .log files too: a journal's first line is an Optuna JSON op."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().lstrip().startswith('{"op_code"')
    except OSError:
        return False


def _is_optuna_sqlite(path: Path) -> bool:
    """Read-only look for Optuna's tables: opening any .db through Optuna would create them."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {"studies", "trials"} <= tables
