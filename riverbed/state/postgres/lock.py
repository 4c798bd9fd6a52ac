"""One process at a time for a piece of work, across hosts: a session advisory lock on the
state store's server (``pg_try_advisory_lock``), held by a connection of its own for the
lock's lifetime. What riverbed.lake.lock's lock file is on one machine, for a project whose
capture, pipeline and web app run on several.

The server drops the lock when the session ends: a holder killed with kill -9 closes its
socket, so a dead run never blocks the next one. A second taker is refused at once, as by the
lock file, and told who holds it: the holder's pid and host, read from its session's
application_name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import psycopg

from riverbed.errors import RiverbedError, dsn_display, first_line, transient_connect
from riverbed.state.postgres.schema import advisory_key

_HOLDER = "riverbed lock "
# a host that vanishes without closing its socket (power, network) holds the lock until the
# server's keepalives find it gone: about a minute, not the system's two hours
_KEEPALIVES = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


class AdvisoryLock:
    """The lock ``name`` of the store in ``schema`` at ``conninfo`` (password included), or
    RiverbedError(``refusal(holder)``) when another session holds it."""

    def __init__(
        self, conninfo: str, schema: str, name: str, refusal: Callable[[str], str]
    ) -> None:
        key = advisory_key(schema, name)
        holder = f"{os.getpid()} on {socket.gethostname()}"
        self._conn = _connect(conninfo, (_HOLDER + holder)[:63])
        try:
            row = self._conn.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()
            taken = row is not None and bool(row[0])
            other = None if taken else _holder(self._conn, key)
        except BaseException:
            self._conn.close()
            raise
        if not taken:
            self._conn.close()
            raise RiverbedError(refusal(other or "another process"))

    def release(self) -> None:
        # closing the session releases it; a connection already lost released it too
        self._conn.close()

    def __enter__(self) -> AdvisoryLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _connect(conninfo: str, application_name: str) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(
            conninfo, autocommit=True, connect_timeout=10, application_name=application_name
        )
    except psycopg.OperationalError as exc:
        raise RiverbedError(
            f"cannot take the lock on the state store {dsn_display(conninfo, 'state.dsn')}: "
            f"{first_line(exc)}; check state.dsn and state.password, and that the server is up",
            transient=transient_connect(exc),
        ) from exc
    for setting, value in _KEEPALIVES.items():
        conn.execute(f"set {setting} = {value}")
    return conn


def _holder(conn: psycopg.Connection[Any], key: int) -> str | None:
    """The pid and host of the session holding the lock ``key``, as it named itself."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(
        "select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.objsubid = 1"
        " and l.database = (select oid from pg_database where datname = current_database())"
        " and l.classid::bigint = %s and l.objid::bigint = %s",
        (unsigned >> 32, unsigned & 0xFFFF_FFFF),
    ).fetchone()
    if row is None or not str(row[0]).startswith(_HOLDER):
        return None
    return str(row[0]).removeprefix(_HOLDER)
