"""The embedded server's password and who may use it.

The secret is made once, from ``secrets``, and kept in a pgpass file (libpq's own format,
``host:port:database:user:password``, 0600: libpq ignores a pgpass file that others may read)
whose one line is for the superuser only, on any host, port and database: the file belongs to
one server, named by the DSN's ``passfile=``, and a role of the user's own (a capture role from
``riverbed source grants``) gets no password from it. Nothing here logs or returns the secret
but ``read_or_create`` (for initdb's password file and for setting it on an older cluster).

``HBA`` is the whole of the server's pg_hba.conf: SCRAM-SHA-256 for every database and for
replication, over TCP on 127.0.0.1 (the server listens there only and has no Unix socket).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from riverbed.errors import SourceError
from riverbed.private import create_private

HBA = """\
# written by `riverbed source up`: a password (SCRAM-SHA-256) for every connection,
# replication included, on 127.0.0.1 only; there is no Unix socket
# TYPE  DATABASE     USER  ADDRESS       METHOD
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
"""


def conninfo_value(value: str) -> str:
    """``value`` as a libpq keyword value: quoted when it has a space, a quote or a backslash."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_or_create(path: Path, user: str) -> str:
    """The password in the pgpass file ``path``, made (0600) with a new one if it is missing."""
    if not path.exists():
        # URL-safe: no ':' or '\\', which pgpass would need escaped
        password = secrets.token_urlsafe(32)
        descriptor = create_private(path)
        with open(descriptor, "w") as handle:
            handle.write(f"*:*:*:{user}:{password}\n")
    try:
        fields = path.read_text().strip().split(":")
    except OSError as exc:
        raise SourceError(f"cannot read the password file {path}: {exc.strerror}") from exc
    if len(fields) != 5 or fields[3] != user or not fields[4]:
        raise SourceError(f"the password file {path} is not one pgpass line for {user}; restore it")
    return fields[4]


def set_password(dsn: str, user: str, password: str) -> None:
    """Give ``user`` ``password``: its SCRAM verifier is computed here (libpq's
    PQencryptPasswordConn), so the clear password never reaches the server or its log."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("alter role {} password {}").format(
                sql.Identifier(user), sql.Literal(verifier.decode())
            )
        )
