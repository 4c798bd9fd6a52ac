"""A principal's query on the warehouse, through the gateway: the one way every read path
(``riverbed query --as``, the web app, the API, exports) reaches the warehouse's rows.

``governed_rows`` does it on a warehouse already open read-only (the command line keeps its
own watchdog around it); ``query_as`` opens one, for callers that want the rows and nothing
else. Either way: the policy is resolved from the project's config, the warehouse's catalog is
read, the gateway decides, the PII key's pads go into the session when a hash mask needs them,
and the rewritten SQL streams. An error from the warehouse quotes the principal's SQL, never
the rewritten one (which holds row filters and mask expressions).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from riverbed.config import Project
from riverbed.govern.gateway import Catalog, Governed, Refused, govern
from riverbed.govern.masks import key_statements
from riverbed.govern.policy import GovernError, Policy
from riverbed.load.warehouse import (
    QueryStopped,
    Rows,
    Warehouse,
    WarehouseError,
    open_warehouse,
    statement_head,
)
from riverbed.transform.pii import pii_key

# every table and column of the schema queries run in: information_schema reads the same on
# both warehouses
_CATALOG = (
    "SELECT table_name, column_name, data_type FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND table_catalog = current_database()"
    " ORDER BY table_name, ordinal_position"
)
_WHERE = "SELECT current_database() AS d, current_schema() AS s"


def read_catalog(warehouse: Warehouse) -> Catalog:
    """The warehouse's tables and columns, as the gateway resolves names against them."""
    where = warehouse.query(_WHERE).to_pylist()[0]
    tables: dict[str, dict[str, str]] = {}
    for row in warehouse.query(_CATALOG).to_pylist():
        tables.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    return Catalog(warehouse.dialect, str(where["d"]), str(where["s"]), tables)


def decide(project: Project, warehouse: Warehouse, principal: str, sql: str) -> Governed:
    """The gateway's decision on ``sql`` for ``principal`` on ``warehouse``."""
    policy = Policy.from_config(project.config)
    return govern(policy, policy.principal(principal), sql, read_catalog(warehouse))


@contextmanager
def governed_rows(
    project: Project, warehouse: Warehouse, principal: str, sql: str
) -> Iterator[Rows]:
    """Stream ``sql`` as ``principal`` sees it; GovernError when the gateway refuses it."""
    governed = decide(project, warehouse, principal, sql)
    if not governed.allowed:
        raise Refused(f"query refused for {principal}: {governed.reason}")
    if governed.hashes:
        try:
            for statement in key_statements(pii_key(project), warehouse.dialect):
                warehouse.execute(statement)
        except WarehouseError:
            # its message would quote the statement, which holds the key
            raise GovernError(
                f"warehouse: cannot give the session the PII key the hash mask needs "
                f"(principal {principal}); check the warehouse is reachable"
            ) from None
    with _quoting(sql, governed.sql), warehouse.stream(governed.sql) as rows:
        yield Rows(rows.names, _quoted(rows.batches, sql, governed.sql))


def query_as(
    project: Project,
    principal: str,
    sql: str,
    *,
    timeout: float | None = None,
    limit: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """``sql`` run as ``principal`` on the project's warehouse, opened read-only for it: its
    rows as Arrow record batches, as they stream, at most ``limit`` rows (the query stops
    there). Raises GovernError (refused), WarehouseError (failed) or QueryStopped (past
    ``timeout`` seconds). Closing the iterator early stops the query. For the web app, the
    API and exports."""
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    timer = threading.Timer(timeout, warehouse.interrupt) if timeout is not None else None
    try:
        if timer is not None:
            timer.start()
        with governed_rows(project, warehouse, principal, sql) as rows:
            left = limit
            for batch in rows.batches:
                if left is not None:
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                yield batch
                if left == 0:
                    return
    finally:
        if timer is not None:
            timer.cancel()
        warehouse.close()


def _quoted(
    batches: Iterator[pa.RecordBatch], sql: str, rewritten: str
) -> Iterator[pa.RecordBatch]:
    with _quoting(sql, rewritten):
        yield from batches


@contextmanager
def _quoting(sql: str, rewritten: str) -> Iterator[None]:
    """Warehouse errors quoting the principal's SQL in place of the rewritten SQL."""
    try:
        yield
    except WarehouseError as exc:
        text = str(exc).replace(statement_head(rewritten), statement_head(sql))
        if text == str(exc):
            raise
        kind = QueryStopped if isinstance(exc, QueryStopped) else WarehouseError
        raise kind(text, error_class=exc.error_class) from exc
