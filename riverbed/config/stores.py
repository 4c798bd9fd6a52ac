"""riverbed.yaml's ``lake:``, ``warehouse:`` and ``state:`` sections: where Riverbed keeps
data. The lake is a local folder or S3; the warehouse and the state store are each a local file
by default or a PostgreSQL database by DSN (``_PostgresCapable``), and ``warehouse.query``
bounds ``riverbed query``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from riverbed.config.fields import Dsn, Model, Secret

# --- lake, warehouse, state ---------------------------------------------------------------

KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LakeEncryptionConfig(Model):
    """``lake.encryption``: Parquet modular encryption of every lake file (riverbed.lake.crypto).

    The footer (schema, statistics) and every column are encrypted with keys wrapped by master
    key ``footer_key``; personal columns (``pii:`` columns and columns tagged ``pii`` in
    governance.tags, as riverbed.config.personal names them) with keys wrapped by ``pii_key``.
    Both are ids of master keys in ``keyring``, a 0600 file made on first use; with
    ``master_key`` ({env:} or {file:}) the master keys in that file are sealed by it."""

    enabled: bool = False
    keyring: Path = Path(".riverbed/keyring")
    footer_key: str = "footer"
    pii_key: str = "pii"
    # seals the master keys inside the keyring file, so that the file alone opens nothing
    master_key: Secret | None = None
    # how long a process reuses a key-encryption key before making a new one
    key_cache_seconds: float = Field(600.0, gt=0)
    # the personal column names of every table, set from the whole config by RiverbedConfig
    _personal: frozenset[str] = PrivateAttr(default=frozenset())

    @field_validator("footer_key", "pii_key")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if not KEY_ID.match(value):
            raise ValueError(
                "a master key id is 1 to 64 letters, digits, '_', '.' or '-', e.g. footer"
            )
        return value

    @property
    def personal(self) -> frozenset[str]:
        return self._personal


class LakeConfig(Model):
    path: str = ".riverbed/lake"  # a local folder or s3://bucket/prefix
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    max_rows: int = Field(100_000, ge=1)
    max_seconds: float = Field(60.0, gt=0)
    encryption: LakeEncryptionConfig = LakeEncryptionConfig()
    # server-side encryption requested on every object written to an s3:// lake
    s3_sse: Literal["AES256", "aws:kms"] | None = None
    s3_sse_kms_key_id: str | None = None

    @model_validator(mode="after")
    def _s3_settings_need_s3(self) -> LakeConfig:
        is_s3 = self.path.startswith("s3://")
        if not is_s3 and self.endpoint_url is not None:
            raise ValueError("endpoint_url is only used when path is s3://bucket/prefix")
        if not is_s3 and self.s3_sse is not None:
            raise ValueError("s3_sse is only used when path is s3://bucket/prefix")
        if self.s3_sse_kms_key_id is not None and self.s3_sse != "aws:kms":
            raise ValueError("s3_sse_kms_key_id needs s3_sse: aws:kms")
        if is_s3 and not re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", self.path):
            raise ValueError("path must look like s3://bucket/prefix with a valid bucket name")
        return self


class _PostgresCapable(Model):
    """A store that is a local file by default or a PostgreSQL database by DSN."""

    dsn: Dsn = None  # engine postgres
    password: Secret | None = None

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> _PostgresCapable:
        if getattr(self, "engine", None) == "postgres" and self.dsn is None:
            raise ValueError("engine postgres needs dsn: 'host=... dbname=...'")
        return self


_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B)$", re.IGNORECASE)


class QueryConfig(Model):
    """The limits of `riverbed query` (read-only SQL on the warehouse)."""

    # how long one query may run, its output included; `riverbed query --timeout` overrides it
    timeout_seconds: float = Field(300.0, gt=0)
    # DuckDB's memory for the reads of one process (it spills to disk beyond, where its
    # operators can); ``auto``: a quarter of this machine's memory, at least 2GB. PostgreSQL
    # bounds its own
    memory_limit: str = "auto"

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str) -> str:
        if value.strip().lower() == "auto":
            return "auto"
        if not _SIZE.match(value.strip()):
            raise ValueError(
                "must be auto or a size such as 512MB or 2GB (KB, MB, GB, TB; KiB ... TiB)"
            )
        return value.strip()

    def memory(self) -> str:
        """The limit as DuckDB takes it: ``auto`` made a size. A live chart over 10M fact rows
        (its current-state windows, joins and a count distinct on two threads) did not fit
        in 2GB, and DuckDB cannot spill every operator."""
        if self.memory_limit != "auto":
            return self.memory_limit
        try:
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            physical = 0
        return f"{max(2 * 1024, physical // 4 // 2**20)}MiB"


class WarehouseConfig(_PostgresCapable):
    engine: Literal["duckdb", "postgres"] = "duckdb"
    path: Path = Path(".riverbed/warehouse.duckdb")  # engine duckdb
    query: QueryConfig = QueryConfig()


# a schema name used unquoted: lower case, as PostgreSQL folds it, and no longer than its 63
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class StateConfig(_PostgresCapable):
    """The state store (riverbed.state): a SQLite file at ``path`` (one machine), or the
    tables of ``schema`` in the PostgreSQL database of ``dsn`` (capture, pipeline and web app
    on different hosts sharing it; its locks are that server's advisory locks)."""

    engine: Literal["sqlite", "postgres"] = "sqlite"
    path: Path = Path(".riverbed/state.db")  # engine sqlite
    schema_name: str = Field("riverbed_state", alias="schema")  # engine postgres

    @field_validator("schema_name")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        if not _SCHEMA.match(value):
            raise ValueError(
                "must be a PostgreSQL schema name in lower case: letters, digits and '_', "
                "starting with a letter or '_', at most 63, e.g. riverbed_state"
            )
        return value

    @model_validator(mode="after")
    def _keys_of_the_engine(self) -> StateConfig:
        given = self.model_fields_set
        if self.engine == "sqlite":
            wrong = [key for key in ("dsn", "password", "schema_name") if key in given]
            if wrong:
                keys = ", ".join(key.removesuffix("_name") for key in wrong)
                raise ValueError(
                    f"{keys} is for engine postgres; set engine: postgres, or remove {keys}"
                )
        elif "path" in given:
            raise ValueError(
                "path is for engine sqlite (a local file); engine postgres keeps the state in "
                "schema (default riverbed_state) of the database of dsn: remove path"
            )
        return self
