"""Run records: every run's tab, parameters, seed, models, device and timings, kept in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    tab TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER,
    models TEXT NOT NULL,
    device TEXT,
    attention TEXT,
    timings TEXT NOT NULL,
    outputs TEXT NOT NULL,
    error TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS runs_tab_created ON runs (tab, created);
"""
# Columns added after the first release, with their SQL type: older databases gain them on open.
_ADDED_COLUMNS = {"owner": "TEXT"}


def _current_owner_key() -> str:
    from .owners import current_owner

    return current_owner().key


@dataclass
class RunRecord:
    tab: str
    params: dict[str, Any]
    seed: int | None = None
    models: list[dict[str, Any]] = field(default_factory=list)  # {"id", "revision", "test_model"}
    device: str | None = None
    attention: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    outputs: list[str] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    owner: str = field(default_factory=_current_owner_key)  # core/owners.py: whose run this is

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage of the run (accumulates when a stage repeats)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


_JSON_FIELDS = ("params", "models", "timings", "outputs")


class RunStore:
    """SQLite store of runs. A connection per call keeps it safe across Gradio's worker threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else settings.outputs_dir() / "runs.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        open_database(self.path, self._create)

    def _create(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def save(self, record: RunRecord) -> RunRecord:
        row = asdict(record)
        for key in _JSON_FIELDS:
            row[key] = json.dumps(row[key], default=str)
        columns = ", ".join(row)
        placeholders = ", ".join(f":{key}" for key in row)
        with self._lock, self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({placeholders})", row)
        return record

    def get(self, run_id: str) -> RunRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _to_record(row) if row else None

    def list(self, tab: str | None = None, limit: int = 100) -> list[RunRecord]:
        query, args = "SELECT * FROM runs", []
        if tab:
            query, args = query + " WHERE tab = ?", [tab]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created DESC LIMIT ?", [*args, limit]).fetchall()
        return [_to_record(row) for row in rows]

    @contextmanager
    def run(self, record: RunRecord) -> Iterator[RunRecord]:
        """Save `record` as running, then as done/cancelled/failed when the block ends."""
        from .jobs import JobCancelled

        self.save(record)
        try:
            yield record
            record.status = "done"
        except JobCancelled:
            record.status = "cancelled"
            raise
        except BaseException as err:
            record.status, record.error = "failed", str(err)[:2000]
            raise
        finally:
            self.save(record)


    def delete(self, run_id: str) -> RunRecord | None:
        """Remove a run's record and the files it made (the store's owner deletes their own work)."""
        record = self.get(run_id)
        if record is None:
            return None
        root = self.path.parent.resolve()
        for output in record.outputs:
            path = Path(output).resolve()
            if path.is_relative_to(root) and path.is_file():  # never a file outside this store's folder
                path.unlink()
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        return record


def _to_record(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key])
    data["owner"] = data.get("owner") or "local"  # runs recorded before owners existed were the local user's
    return RunRecord(**data)


# Databases found damaged and set aside since the process started (the banner shows them once each).
SET_ASIDE: list[str] = []


def open_database(path: Path, create: Callable[[sqlite3.Connection], None]) -> None:
    """Open (and create or migrate) a SQLite file; a damaged one is moved aside (`NAME.damaged-TIME`) and a fresh
    one started, so that one bad file never stops the app. What was in the damaged file is kept beside it."""
    try:
        with sqlite3.connect(path, timeout=30) as db:
            create(db)
        return
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            raise
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        SET_ASIDE.append(f"{path.name} was damaged ({err}); it was moved to {aside.name} and a new one started.")
    with sqlite3.connect(path, timeout=30) as db:
        create(db)


_STORES: dict[Path, RunStore] = {}
_STORES_LOCK = threading.Lock()


def default_store() -> RunStore:
    """The store under the configured outputs folder (one per folder, created on first use)."""
    path = settings.outputs_dir().resolve() / "runs.sqlite"
    with _STORES_LOCK:
        if path not in _STORES:
            _STORES[path] = RunStore(path)
        return _STORES[path]
