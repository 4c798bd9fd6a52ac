"""riverbed.yaml's ``source:`` and ``capture:`` sections: the PostgreSQL whose changes are
captured (an external server by DSN, or the embedded one Riverbed starts), and how capture reads
it (snapshot workers, heartbeats, the replication status cadence).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from riverbed.config.fields import IDENTIFIER, Dsn, Model, Secret

# --- source -------------------------------------------------------------------------------


class EmbeddedSourceConfig(Model):
    data_dir: Path = Path(".riverbed/pg")
    port: int = Field(54329, ge=1024, le=65535)
    max_replication_slots: int = Field(10, ge=1)
    max_wal_senders: int = Field(10, ge=1)


class SourceConfig(Model):
    dsn: Dsn = None  # set to use an external PostgreSQL instead of the embedded one
    password: Secret | None = None
    database: str = "postgres"
    schema_name: str = Field("shop", alias="schema")
    # None: a name of this project's own, riverbed_<8 hex> (CaptureState.names)
    slot: str | None = None
    publication: str | None = None
    embedded: EmbeddedSourceConfig = EmbeddedSourceConfig()

    @field_validator("slot", "publication", "schema_name")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not IDENTIFIER.match(value):
            raise ValueError("must be a plain identifier (letters, digits, underscore)")
        return value


class CaptureConfig(Model):
    # DMS convention: snapshot rows get _op 'I' only when asked; otherwise 'L' (full load)
    include_op_for_full_load: bool = False
    snapshot_workers: int = Field(2, ge=1, le=32)
    heartbeat_seconds: float = Field(10.0, gt=0)  # idle this long: emit a WAL message, advance
    # standby feedback / metrics cadence; psycopg2 refuses under a second
    status_interval_seconds: float = Field(5.0, ge=1)
    # stream values in binary form where the source (PostgreSQL 14+) and every captured
    # column's type allow it (capture.binary_mode); false keeps the stream in text
    binary: bool = True
    # have the source (PostgreSQL 14+) send large transactions while they run, not all at
    # their commit (capture.streamed): the lake has them soon after the commit. Opt-in until
    # the abort of a streamed transaction that changed a table's shape is tested end to end
    streaming: bool = False
