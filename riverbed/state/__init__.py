"""The state store: the lake's manifest, capture's positions, the transform's bookmarks, the
load's batches, the run history, metrics, alarms and the audit trail: everything a stage records about its work
and every other stage reads (riverbed.state.store is the contract): one SQLite file
(state.engine: sqlite, the default) or a PostgreSQL schema several hosts share (state.engine:
postgres), with the project's locks on that server (``advisory_lock``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from riverbed.config.loader import Project
from riverbed.config.stores import StateConfig
from riverbed.errors import RiverbedError, first_line
from riverbed.state.records import (
    LakeFile,
    LoadBatch,
    Sample,
    SchemaVersion,
    SnapshotDone,
    Staging,
    TableSummary,
)
from riverbed.state.sql.database import StateStoreFull
from riverbed.state.sqlite import SQLiteStore
from riverbed.state.sqlite.db import disk_full
from riverbed.state.store import StateStore

__all__ = [
    "LakeFile",
    "LoadBatch",
    "SQLiteStore",
    "Sample",
    "SchemaVersion",
    "SnapshotDone",
    "Staging",
    "StateStore",
    "StateStoreFull",
    "TableSummary",
    "advisory_lock",
    "existing_state",
    "open_state",
    "open_store",
]


def open_store(path: Path) -> StateStore:
    """The SQLite state store at ``path`` (one that exists: what the metrics endpoint reads)."""
    return SQLiteStore(path)


def open_state(project: Project) -> StateStore:
    """The project's state store: the SQLite file at state.path, or the PostgreSQL schema
    state.schema of state.dsn."""
    state = project.config.state
    if state.engine == "postgres":
        # psycopg only for the projects that use it
        from riverbed.state.postgres import PostgresStore

        return PostgresStore(state_conninfo(state), state.schema_name)
    path = project.path(state.path)
    try:
        return SQLiteStore(path)
    except (OSError, sqlite3.Error) as exc:
        full = disk_full(exc, path)
        if full is not None:
            raise full from exc
        # a folder that cannot be created or written is a config mistake, not a crash
        reason = getattr(exc, "strerror", None) or first_line(exc)
        raise RiverbedError(
            f"state.path = {state.path}: cannot open the state store ({reason}); its folder "
            f"{path.parent} must exist (or be creatable) and be writable: fix state.path in "
            "riverbed.yaml"
        ) from exc


def existing_state(project: Project) -> StateStore | None:
    """The project's state store, or None before anything made it (a SQLite file not there
    yet: opening it would create it). A PostgreSQL store is on its server and opened (its
    tables created at worst)."""
    state = project.config.state
    if state.engine == "sqlite" and not project.path(state.path).exists():
        return None
    return open_state(project)


def advisory_lock(state: StateConfig, name: str, refusal: Callable[[str], str]) -> Any:
    """The PostgreSQL state store's lock ``name``, held until ``release()``: one process at a
    time on any host (riverbed.state.postgres.lock); RiverbedError(``refusal(holder)``) when
    another holds it."""
    from riverbed.state.postgres.lock import AdvisoryLock

    return AdvisoryLock(state_conninfo(state), state.schema_name, name, refusal)


def state_conninfo(state: StateConfig) -> str:
    """The libpq connection string of a PostgreSQL state store: state.dsn with
    state.password, read now."""
    from psycopg.conninfo import make_conninfo

    assert state.dsn is not None  # the config model requires it for engine postgres
    if state.password is None:
        return state.dsn
    try:
        password = state.password.reveal()
    except ValueError as exc:
        raise RiverbedError(f"state.password: {exc}") from None
    return make_conninfo(state.dsn, password=password)
