"""The state store in a PostgreSQL schema (state.engine: postgres, state.dsn, state.schema):
for a project whose capture, pipeline and web app run on different hosts, sharing the lake
and this store. The same repositories as SQLite's (riverbed.state.sql) over a PostgreSQL
Database (riverbed.state.postgres.db); the locks that keep one run at a time are advisory
locks of the same server (riverbed.state.postgres.lock)."""

from __future__ import annotations

from riverbed.state.postgres.db import Database
from riverbed.state.sql import SCHEMA, SQLStore

DEFAULT_SCHEMA = "riverbed_state"


class PostgresStore(SQLStore):
    """Every repository of the state store, over one connection to ``conninfo`` (password
    included), its tables in ``schema``."""

    def __init__(self, conninfo: str, schema: str = DEFAULT_SCHEMA):
        self.conninfo = conninfo
        self.schema = schema
        super().__init__(Database(conninfo, schema, SCHEMA))
