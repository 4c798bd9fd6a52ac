"""The state store in one SQLite file (state.path): the default, for one machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from riverbed.state.sqlite import (
    alarms,
    audit,
    capture,
    erasure,
    lake_files,
    loads,
    metrics,
    runs,
    transform,
)
from riverbed.state.sqlite.alarms import SQLiteAlarmState
from riverbed.state.sqlite.audit import SQLiteAuditLog
from riverbed.state.sqlite.capture import SQLiteCaptureState
from riverbed.state.sqlite.db import Database
from riverbed.state.sqlite.erasure import SQLiteErasureLog
from riverbed.state.sqlite.lake_files import SQLiteLakeFiles
from riverbed.state.sqlite.loads import SQLiteLoadState
from riverbed.state.sqlite.metrics import SQLiteMetrics
from riverbed.state.sqlite.runs import SQLiteRunState
from riverbed.state.sqlite.transform import SQLiteTransformState

# every repository's tables, created when the store is opened
SCHEMA = "".join(
    module.SCHEMA
    for module in (lake_files, capture, metrics, transform, loads, runs, alarms, audit, erasure)
)


class SQLiteStore:
    """Every repository of the state store, over one connection (riverbed.state.store)."""

    def __init__(self, path: Path):
        self.path = path
        self._db = Database(path, SCHEMA)
        for table, columns in lake_files.ADDED_COLUMNS.items():
            self._db.add_columns(table, columns)
        self.lake = SQLiteLakeFiles(self._db)
        self.capture = SQLiteCaptureState(self._db, self.lake)
        self.metrics = SQLiteMetrics(self._db)
        self.transform = SQLiteTransformState(self._db, self.lake)
        self.loads = SQLiteLoadState(self._db)
        self.runs = SQLiteRunState(self._db)
        self.alarms = SQLiteAlarmState(self._db)
        self.audit = SQLiteAuditLog(self._db)
        self.erasure = SQLiteErasureLog(self._db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything the repositories write inside becomes durable at once, or not at all."""
        with self._db.write():
            yield
