"""The state store: the lake's manifest, capture's positions, the transform's bookmarks, the
load's batches, the run history, metrics, alarms and the audit trail: everything a stage records about its work
and every other stage reads (riverbed.state.store is the contract)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from riverbed.config.loader import Project
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
    "open_state",
    "open_store",
]


def open_store(path: Path) -> StateStore:
    """The state store at ``path`` (one that exists: what the metrics endpoint reads)."""
    return SQLiteStore(path)


def open_state(project: Project) -> StateStore:
    """The project's state store (state.engine at state.path)."""
    state = project.config.state
    if state.engine != "sqlite":
        raise RiverbedError("state.engine postgres is not supported yet; use state.engine: sqlite")
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
