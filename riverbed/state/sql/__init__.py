"""The state store's repositories, written once in the SQL both engines run
(riverbed.state.sql.database says which), over the Database an engine gives them: SQLite
(riverbed.state.sqlite) or PostgreSQL (riverbed.state.postgres)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from riverbed.state.sql import (
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
from riverbed.state.sql.alarms import SQLAlarmState
from riverbed.state.sql.audit import SQLAuditLog
from riverbed.state.sql.capture import SQLCaptureState
from riverbed.state.sql.database import Database
from riverbed.state.sql.erasure import SQLErasureLog
from riverbed.state.sql.lake_files import SQLLakeFiles
from riverbed.state.sql.loads import SQLLoadState
from riverbed.state.sql.metrics import SQLMetrics
from riverbed.state.sql.runs import SQLRunState
from riverbed.state.sql.transform import SQLTransformState

# every repository's tables, in SQLite's words, created when the store is opened
SCHEMA = "".join(
    module.SCHEMA
    for module in (lake_files, capture, metrics, transform, loads, runs, alarms, audit, erasure)
)


class SQLStore:
    """Every repository of the state store, over one Database (riverbed.state.store)."""

    def __init__(self, db: Database):
        self._db = db
        for table, columns in lake_files.ADDED_COLUMNS.items():
            self._db.add_columns(table, columns)
        self.lake = SQLLakeFiles(self._db)
        self.capture = SQLCaptureState(self._db, self.lake)
        self.metrics = SQLMetrics(self._db)
        self.transform = SQLTransformState(self._db, self.lake)
        self.loads = SQLLoadState(self._db)
        self.runs = SQLRunState(self._db)
        self.alarms = SQLAlarmState(self._db)
        self.audit = SQLAuditLog(self._db)
        self.erasure = SQLErasureLog(self._db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything the repositories write inside becomes durable at once, or not at all."""
        with self._db.write():
            yield
