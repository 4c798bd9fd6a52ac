"""The state store in one SQLite file (state.path): the default, for one machine."""

from __future__ import annotations

from pathlib import Path

from riverbed.state.sql import SCHEMA, SQLStore
from riverbed.state.sqlite.db import Database


class SQLiteStore(SQLStore):
    """Every repository of the state store, over one connection to the file at ``path``."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(Database(path, SCHEMA))
