"""The base model and the field types every section of riverbed.yaml shares.

``Model`` forbids unknown keys (a typo is an error, never a silently ignored setting) and is
frozen. Secrets are never values in the file: a ``Secret`` field takes ``{env: NAME}`` or
``{file: PATH}`` and is read on use only. A ``Dsn`` is a libpq connection string with no
password in it (the password is a Secret of its own), checked without importing psycopg when
it is in one of the plain forms.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
    model_validator,
)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _no_inline_secret(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "secrets cannot be written in the config; use {env: VARIABLE} or {file: PATH}"
        )
    return value


class SecretRef(Model):
    """Where a secret lives: an environment variable or a file. The value is read on use only."""

    env: str | None = None
    file: Path | None = None

    @field_validator("file")
    @classmethod
    def _against_project(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A relative file is the project folder's (``root`` in the validation context, which
        riverbed.config.loader gives), never the current directory's: a command run from
        elsewhere with -c reads the same secret."""
        root = (info.context or {}).get("root") if isinstance(info.context, dict) else None
        if value is None or root is None:
            return value
        value = value.expanduser()
        return value if value.is_absolute() else Path(root) / value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env: VARIABLE or file: PATH")
        return self

    def reveal(self) -> str:
        """Read the secret now. Raises ValueError naming the variable or file, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from exc


Secret = Annotated[SecretRef, BeforeValidator(_no_inline_secret)]


# libpq keywords whose value is a secret, which belongs in password: {env: ...}, not the file
_SECRET_KEYWORDS = ("password", "sslpassword")


def _dsn_without_password(dsn: str | None) -> str | None:
    if dsn is None:
        return None
    if not dsn.strip():
        raise ValueError(
            'is empty; give the server, e.g. "host=db.internal port=5432 dbname=shop user=riverbed"'
        )
    parts: dict[str, Any] | None = _conninfo_keys(dsn)
    if parts is None:  # not in the plain forms read below: libpq decides, and says why
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(dsn)
        except Exception as exc:  # psycopg raises ProgrammingError with a parser message
            reason = " ".join(str(exc).split())  # libpq's message ends in a line break
            raise ValueError(f"not a valid PostgreSQL connection string ({reason})") from None
    secrets = [key for key in _SECRET_KEYWORDS if parts.get(key)]
    if secrets:
        raise ValueError(
            f"the DSN contains a {' and a '.join(secrets)}; remove it and set "
            "password: {env: VARIABLE} instead"
        )
    dbname = str(parts.get("dbname") or "")
    if "=" in dbname or "://" in dbname:
        _dsn_without_password(dbname)  # libpq reads a dbname like this as a DSN of its own
    return dsn


_KEYWORD_VALUE = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)\s*")
# libpq keywords read here; a string with any other goes to libpq, which knows its own list
_COMMON_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "options",
        "application_name",
        "connect_timeout",
        "client_encoding",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "service",
        "target_session_attrs",
    ]
)


def _conninfo_keys(dsn: str) -> dict[str, str] | None:
    """The keywords of a libpq connection string in its two plain forms, a URI or
    ``key=value`` pairs (quoted values unquoted), read without importing psycopg (a tenth of
    a second on every command); None when the string is anything else, or names a keyword
    besides the common ones."""
    keys: dict[str, str] = {}
    if dsn.startswith(("postgresql://", "postgres://")):
        url = urlsplit(dsn)
        try:
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            return None
        keys = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.password:
            keys["password"] = url.password
    else:
        at = 0
        while dsn[at:].strip():
            match = _KEYWORD_VALUE.match(dsn, at)
            if match is None:
                return None
            value = match.group(2)
            if value.startswith("'"):
                value = value[1:-1]
            keys[match.group(1)] = re.sub(r"\\(.)", r"\1", value)
            at = match.end()
    return keys if set(keys) <= _COMMON_KEYWORDS else None


Dsn = Annotated[str | None, BeforeValidator(_dsn_without_password)]
