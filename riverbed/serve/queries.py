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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import pyarrow as pa

from riverbed.config import Project
from riverbed.errors import first_line
from riverbed.govern.audit import record_decision
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
from riverbed.serve.audit_store import audit_store, discard
from riverbed.serve.copies import fresh_copies
from riverbed.serve.roles import principal_role
from riverbed.state.records import AuditPath
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
    return _decide(project, warehouse, principal, sql)[0]


def _decide(
    project: Project, warehouse: Warehouse, principal: str, sql: str
) -> tuple[Governed, Callable[[], Governed]]:
    """The gateway's decision, and how to make it again reading the principal's fresh
    governed copies (riverbed.serve.copies) where there are any: the same rows, sooner."""
    policy = Policy.from_config(project.config)
    who = policy.principal(principal)
    catalog = read_catalog(warehouse)
    governed = govern(policy, who, sql, catalog)

    def with_copies() -> Governed:
        if not governed.allowed or not project.config.governance.copies:
            return governed
        copies = fresh_copies(project, warehouse, policy, who, catalog, governed.tables)
        return govern(policy, who, sql, catalog, copies) if copies else governed

    return governed, with_copies


@contextmanager
def governed_rows(
    project: Project, warehouse: Warehouse, principal: str, sql: str, *, path: AuditPath = "cli"
) -> Iterator[Rows]:
    """Stream ``sql`` as ``principal`` sees it; GovernError when the gateway refuses it.
    Every decision is recorded in the audit trail (riverbed.govern.audit) with ``path``, the
    way the query came in: a refusal before it is raised, a query once its rows are read
    (how many, and its error if it failed). A query whose record cannot be written fails:
    nothing is read unrecorded. On PostgreSQL, where ``riverbed govern apply`` has run, the
    query runs as the principal's own role (riverbed.serve.roles.principal_role)."""
    audit = _Audit(project, principal, path, sql)
    try:
        governed, with_copies = _decide(project, warehouse, principal, sql)
    except GovernError as exc:  # no such principal, a policy it cannot hold
        audit.record((), allowed=False, reason=first_line(exc), rows=None)
        raise
    if not governed.allowed:
        audit.record(governed.tables, allowed=False, reason=governed.reason, rows=None)
        raise Refused(f"query refused for {principal}: {governed.reason}")
    read = [0]
    failed: str | None = None
    try:
        if governed.hashes:
            _give_key(project, warehouse, principal)
        role = (
            principal_role(warehouse, principal)
            if warehouse.dialect == "postgres"
            else nullcontext(False)
        )
        with role as switched:
            # a principal's own role (govern apply) is granted no copy: it reads live
            run = governed if switched else with_copies()
            with _quoting(sql, run.sql), warehouse.stream(run.sql) as rows:
                yield Rows(rows.names, _counted(_quoted(rows.batches, sql, run.sql), read))
    except GeneratorExit:  # the reader stopped reading (a limit reached): not a failure
        raise
    except BaseException as exc:
        failed = first_line(exc) or type(exc).__name__
        raise
    finally:
        audit.record(governed.tables, allowed=True, reason=failed, rows=read[0], quiet=failed)


def _give_key(project: Project, warehouse: Warehouse, principal: str) -> None:
    try:
        for statement in key_statements(pii_key(project), warehouse.dialect):
            warehouse.execute(statement)
    except WarehouseError:
        # its message would quote the statement, which holds the key
        raise GovernError(
            f"warehouse: cannot give the session the PII key the hash mask needs "
            f"(principal {principal}); check the warehouse is reachable"
        ) from None


class _Audit:
    """The audit record of one query, timed from when it was asked."""

    def __init__(self, project: Project, principal: str, path: AuditPath, sql: str):
        self.project, self.principal, self.path, self.sql = project, principal, path, sql
        self.started = time.monotonic()

    def record(
        self,
        tables: Sequence[str],
        *,
        allowed: bool,
        reason: str | None,
        rows: int | None,
        quiet: str | None = None,
    ) -> None:
        """Append the record; GovernError if it cannot be, unless ``quiet`` (the query's own
        error, which a failed record must not hide)."""
        try:
            store = audit_store(self.project)  # the process's, shared by its threads
            try:
                record_decision(
                    store,
                    principal=self.principal,
                    path=self.path,
                    sql=self.sql,
                    tables=tables,
                    allowed=allowed,
                    reason=reason or None,
                    rows=rows,
                    seconds=time.monotonic() - self.started,
                )
            except Exception:
                discard(self.project, store)  # the next record opens the store anew
                raise
        except Exception as exc:
            if quiet is None:
                raise GovernError(
                    f"the audit trail could not record this query ({first_line(exc)}); "
                    "nothing is read unrecorded: check the state store (state.path, or state.dsn)"
                ) from exc


def _counted(batches: Iterator[pa.RecordBatch], read: list[int]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        read[0] += batch.num_rows
        yield batch


def query_as(
    project: Project,
    principal: str,
    sql: str,
    *,
    timeout: float | None = None,
    limit: int | None = None,
    path: AuditPath = "api",
    lock_wait: float | None = None,
) -> Iterator[pa.RecordBatch]:
    """``sql`` run as ``principal`` on the project's warehouse, opened read-only for it: its
    rows as Arrow record batches, as they stream, at most ``limit`` rows (the query stops
    there); at least one batch, empty when there are no rows, for the column names. Raises
    GovernError (refused), WarehouseError (failed), QueryStopped (past ``timeout`` seconds)
    or WarehouseBusy (a DuckDB file another process held past ``lock_wait`` seconds, default
    open_warehouse's). Closing the iterator early stops the query. For the web app, the API
    and exports."""
    warehouse = open_warehouse(
        project.config.warehouse, project.root, read_only=True, lock_wait=lock_wait
    )
    timer = threading.Timer(timeout, warehouse.interrupt) if timeout is not None else None
    try:
        if timer is not None:
            timer.start()
        with governed_rows(project, warehouse, principal, sql, path=path) as rows:
            left = limit
            empty = True
            for batch in rows.batches:
                if left is not None:
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                empty = False
                yield batch
                if left == 0:
                    return
            if empty:  # no rows: one empty batch still names the columns
                yield pa.RecordBatch.from_arrays(
                    [pa.array([], pa.null()) for _ in rows.names], names=rows.names
                )
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
