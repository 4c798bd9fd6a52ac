"""How every command reaches the source database: the embedded server, or ``source.dsn``.

Connection failures are translated here, once, into a SourceError that names the server and the
fix. The password is added to the connection string only at connect time, so nothing that is
printed or logged can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from riverbed.config.fields import SecretRef
from riverbed.config.loader import Project
from riverbed.errors import ErrorClass, SourceError, first_line, missing_database
from riverbed.source.embedded import EmbeddedServer


@dataclass(frozen=True)
class Source:
    """A source PostgreSQL and the means to connect to it."""

    dsn: str  # never holds a password
    password: SecretRef | None
    embedded: EmbeddedServer | None  # None when source.dsn points at an external server

    @property
    def display(self) -> str:
        """The DSN as a URI, safe to print."""
        parts = conninfo_to_dict(self.dsn)
        user = parts.get("user", "")
        host = parts.get("host", "localhost")
        port = parts.get("port", "5432")
        return f"postgresql://{user}{'@' if user else ''}{host}:{port}/{parts.get('dbname', '')}"

    def conninfo(self, **overrides: Any) -> str:
        extra = dict(overrides)
        if self.password is not None:
            try:
                extra["password"] = self.password.reveal()
            except ValueError as exc:
                raise SourceError(f"source.password: {exc}") from None
        return make_conninfo(self.dsn, **extra)

    def connect(self, autocommit: bool = False, **overrides: Any) -> psycopg.Connection[Any]:
        """Open a connection, or raise SourceError saying what to do."""
        try:
            return psycopg.connect(
                self.conninfo(**overrides), autocommit=autocommit, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            first = first_line(exc)
            database = missing_database(exc)
            if database is not None:  # the server is up and answered: starting it is no fix
                key = "source.database" if self.embedded is not None else "the dbname in source.dsn"
                error = SourceError(
                    f'cannot connect to {self.display}: database "{database}" does not exist '
                    f"on the server; create it (CREATE DATABASE {database}), or fix {key} in "
                    "riverbed.yaml",
                    error_class=ErrorClass.TERMINAL,  # it will not appear by retrying
                )
                raise error from exc
            fix = (
                "start it with `riverbed source up`"
                if self.embedded is not None
                else "check source.dsn and source.password in riverbed.yaml"
            )
            raise SourceError(f"cannot connect to {self.display}: {first}; {fix}") from exc


# SQLSTATEs of a session the server ended or cannot start: class 08 (connection exception),
# 57P01 admin_shutdown (a fast shutdown or restart, pg_terminate_backend), 57P02 crash_shutdown,
# 57P03 cannot_connect_now (starting up or shutting down)
SERVER_GONE_SQLSTATES = ("57P01", "57P02", "57P03")


def session_ended(sqlstate: str | None) -> bool:
    """Whether a SQLSTATE says that the server ended the session or cannot take one now."""
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in SERVER_GONE_SQLSTATES)


def connection_lost(exc: psycopg.Error) -> bool:
    """Whether a psycopg error means the connection to the server is gone (the server stopped or
    restarted, the network dropped) rather than a statement failing; only those are worth
    reconnecting for, everything else must surface as it is."""
    if exc.sqlstate is not None:
        return session_ended(exc.sqlstate)
    # raised by psycopg itself, not by the server: it reports a connection that broke under it
    # ("server closed the connection unexpectedly") or was closed as OperationalError
    return isinstance(exc, psycopg.OperationalError)


def source_for(project: Project) -> Source:
    """The source the project's config points at."""
    cfg = project.config.source
    server = EmbeddedServer(project.path(cfg.embedded.data_dir), cfg.embedded)
    if cfg.dsn is not None:
        return Source(_with_embedded_passfile(cfg.dsn, cfg.password, server), cfg.password, None)
    return Source(server.dsn(cfg.database), None, server)


def _with_embedded_passfile(dsn: str, password: SecretRef | None, server: EmbeddedServer) -> str:
    """``dsn``, naming the embedded server's password file when it points at that server
    (127.0.0.1 or localhost, its port) and says no password of its own: the user never types
    the generated secret."""
    parts = conninfo_to_dict(dsn)
    host, port = parts.get("host"), parts.get("port", "5432")
    if (
        password is not None
        or "passfile" in parts
        or host not in ("127.0.0.1", "localhost")
        or port != str(server.settings.port)
        or not server.password_file.exists()
    ):
        return dsn
    return make_conninfo(dsn, passfile=str(server.password_file))


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    active: bool
    retained_wal_bytes: int | None


@dataclass(frozen=True)
class SourceStatus:
    dsn: str
    version: str
    wal_level: str
    slots: list[SlotInfo]


def inspect(source: Source) -> SourceStatus:
    """What ``riverbed source status`` reports."""
    with source.connect(autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()
        wal_level = conn.execute("show wal_level").fetchone()
        rows = conn.execute(
            "select slot_name, plugin, active,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
            " from pg_replication_slots order by slot_name"
        ).fetchall()
    assert version is not None and wal_level is not None
    return SourceStatus(
        dsn=source.display,
        version=version[0],
        wal_level=wal_level[0],
        slots=[SlotInfo(r[0], r[1], r[2], r[3]) for r in rows],
    )
