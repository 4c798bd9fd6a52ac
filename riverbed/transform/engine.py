"""The transform engine protocol: where a batch's SQL runs.

Statements are sqlglot expressions in Riverbed's own dialect (DuckDB's, the one users write
transforms and custom rules in); each engine generates them for itself. Inputs are registered
as named relations, results come back as Arrow tables, so every engine hands the same values to
the same Parquet writer and staged output is identical whichever engine ran it.

Where engines differ in what the runner may rely on, the engine says so in a capability flag
(``keeps_input_order``, ``returns_reference_types``), never ``if engine.name == ...`` in the
runner; ``name`` is only a label (results, logs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
from sqlglot import exp

from riverbed.errors import RiverbedError

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto

DIALECT = "duckdb"  # the dialect of SQL in riverbed.yaml


class TransformEngineError(RiverbedError):
    """A statement failed in the engine; made with ``transient=True`` when a retry may
    succeed (I/O, a lock; RiverbedError's ``error_class``)."""


class TransformEngine(Protocol):
    name: str  # "duckdb" | "spark": a label for results and logs, never branched on
    # a query without ORDER BY that neither joins nor windows (a plain scan, projection and
    # filter of one relation) returns its rows in the order of its input; when False the
    # runner sorts every result back into source order by (_lsn, _seq)
    keeps_input_order: bool
    # results come back in the types of Riverbed's dialect (DuckDB's, the reference the staged
    # files are typed by); when False the runner casts them to the reference types
    returns_reference_types: bool

    def register(self, name: str, table: pa.Table) -> None:
        """Make ``table`` queryable as relation ``name`` (replacing any previous one)."""
        ...

    def register_files(
        self, name: str, paths: list[str], schema: pa.Schema, crypto: LakeCrypto | None = None
    ) -> None:
        """Make local Parquet ``paths`` queryable as relation ``name``. Every file must already
        have exactly ``schema`` (the caller unifies schema versions first). ``crypto``: the
        lake's encryption (storage.crypto), when the files are encrypted."""
        ...

    def register_view(self, name: str, statement: exp.Expression) -> None:
        """Make ``statement``'s rows queryable as relation ``name``, computed when queried."""
        ...

    def query(self, statement: exp.Expression) -> pa.Table:
        """Run ``statement`` (Riverbed's dialect) and return its rows as Arrow."""
        ...

    def close(self) -> None: ...


def open_engine(
    engine: str, spark_master: str = "local[*]", spark_conf: dict[str, str] | None = None
) -> TransformEngine:
    """The engine ``transform.engine`` names; Spark is imported only when chosen."""
    if engine == "spark":
        try:
            from riverbed.transform.spark_engine import SparkEngine
        except ImportError as exc:
            raise RiverbedError(
                f"transform.engine spark needs PySpark ({exc.name} is missing): "
                "pip install 'riverbed[spark]', or set transform.engine: duckdb"
            ) from None
        return SparkEngine(master=spark_master, conf=spark_conf)
    from riverbed.transform.duckdb_engine import DuckDBEngine

    return DuckDBEngine()
