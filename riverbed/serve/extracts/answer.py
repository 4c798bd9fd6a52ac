"""A chart's query answered from the current extract, or None: then it is answered live.

From the extract only when all of these hold, else live, with the same numbers either way:
a generation is published under the current datasets' definitions; the principal may read
the datasets the query needs (policy.py: grants, clear columns, row filters it can express);
the datasets can answer the query (rollup.py; distinct orders summed only while the
generation's split_orders is empty). The rewritten query then goes through the
gateway (riverbed.govern.gateway.govern) with a Catalog of the datasets and the mapped policy,
so the row filters hold as they would on the tables, and it is audited with the reader's
``path`` and the datasets as the tables read (``extract_*``: the record says it came from the
extract). The file is opened read-only: no lock a load or a refresh takes can block it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from riverbed.config import Project
from riverbed.govern.gateway import Catalog, govern
from riverbed.govern.policy import GovernError, Policy
from riverbed.serve.extracts import cohorts, split_orders, store
from riverbed.serve.extracts.datasets import DATASETS, Dataset, fingerprint
from riverbed.serve.extracts.policy import mapped_policy
from riverbed.serve.extracts.refresh import SOURCES
from riverbed.serve.extracts.rollup import rollup
from riverbed.state.records import AuditPath


def answer(project: Project, principal: str, select: exp.Expr, path: AuditPath) -> pa.Table | None:
    """``select``'s rows for ``principal`` from the extract, or None (answer it live)."""
    generation = store.current(project)
    if generation is None or generation.fingerprint != fingerprint():
        return None
    opened = _open(project, generation.name)
    if opened is None:  # pruned between reading the pointer and opening it: live
        return None
    try:
        extract = opened.connection.cursor()  # one per call: a connection serves one thread
        try:
            return _answer(project, principal, select, path, extract, opened)
        finally:
            extract.close()
    finally:
        _release(opened)


Mapped = tuple[Policy, tuple[Dataset, ...]]  # a principal's policy on the datasets, and those
Plan = tuple[str, str, tuple[str, ...]]  # the query on the datasets, governed, tables read


class _Opened:
    """A generation open read-only in this process, with what every query on it reads
    first: its sources (the policy's mapping is per principal, kept once made), catalog and
    the plans made on it. A published generation never changes, so none of it goes stale.
    ``users``: calls reading it now; a superseded generation is closed when the last ends."""

    def __init__(self, connection: duckdb.DuckDBPyConnection):
        self.connection = connection
        self.sources: dict[str, list[str]] = {}
        for table, column in connection.execute(
            f"SELECT table_name, column_name FROM {SOURCES} ORDER BY table_name, position"
        ).fetchall():
            self.sources.setdefault(table, []).append(column)
        self.catalog = _catalog(connection)
        # no live order over two days: distinct orders summed over days are exact
        self.sum_orders = split_orders.count(connection) == 0
        # (id of the config, principal) -> (that config, its mapped policy and datasets)
        self.policies: dict[tuple[int, str], tuple[object, Mapped | None]] = {}
        # (id of the config, principal, the chart's query) -> (that config, its plan)
        self.plans: dict[tuple[int, str, str], tuple[object, Plan | None]] = {}
        self.lock = threading.Lock()
        self.users = 0
        self.superseded = False


_OPEN: dict[Path, _Opened] = {}
_OPEN_LOCK = threading.Lock()
_KEEP_OPEN = 2  # generations: the current one, and the one readers may still be on


def _open(project: Project, name: str) -> _Opened | None:
    """The generation ``name`` open, counted as used until ``_release``."""
    path = store.path_of(project, name)
    with _OPEN_LOCK:
        opened = _OPEN.get(path)
        if opened is None:
            try:
                opened = _Opened(duckdb.connect(str(path), read_only=True))
            except duckdb.Error:
                return None
            _OPEN[path] = opened
            for older in sorted(_OPEN)[: -_KEEP_OPEN or None]:
                if older != path and len(_OPEN) > _KEEP_OPEN:
                    gone = _OPEN.pop(older)
                    gone.superseded = True
                    if not gone.users:  # else the last call on it closes it
                        gone.connection.close()
        opened.users += 1
        return opened


def _release(opened: _Opened) -> None:
    with _OPEN_LOCK:
        opened.users -= 1
        if opened.superseded and not opened.users:
            opened.connection.close()


def _answer(
    project: Project,
    principal: str,
    select: exp.Expr,
    path: AuditPath,
    extract: duckdb.DuckDBPyConnection,
    opened: _Opened,
) -> pa.Table | None:
    plan = _plan(project, principal, select, opened)
    if plan is None:
        return None
    sql, governed, tables = plan
    from riverbed.serve.queries import _Audit  # the live path's record, kept the same

    audit = _Audit(project, principal, path, sql)
    result = extract.sql(governed).to_arrow_table()
    audit.record(tables, allowed=True, reason=None, rows=result.num_rows)
    return result


_PLANS_KEPT = 512  # per generation: a page's charts under the filters readers use


def _plan(project: Project, principal: str, select: exp.Expr, opened: _Opened) -> Plan | None:
    """``select`` rewritten onto the datasets and governed for ``principal``, or None (live).
    Kept per generation by the query's text: a chart asked again under the same filters
    (most calls) skips the rewrite and the gateway's parse, a fifth of a small chart's time."""
    key = (id(project.config), principal, select.sql(dialect="duckdb"))
    with opened.lock:
        cached = opened.plans.get(key)
    if cached is not None and cached[0] is project.config:
        return cached[1]
    plan = _planned(project, principal, select, opened)
    with opened.lock:
        if len(opened.plans) >= _PLANS_KEPT:
            opened.plans.clear()
        opened.plans[key] = (project.config, plan)
    return plan


def _planned(project: Project, principal: str, select: exp.Expr, opened: _Opened) -> Plan | None:
    mapped = _mapped(project, principal, opened)
    if mapped is None:
        return None
    policy, readable = mapped
    rewritten = cohorts.rewrite(select, readable) or rollup(
        select, readable, sum_orders=opened.sum_orders
    )
    if rewritten is None:
        return None
    sql = rewritten[0].sql(dialect="duckdb")
    governed = govern(policy, policy.principal(principal), sql, opened.catalog)
    if not governed.allowed:
        return None
    return sql, governed.sql, tuple(governed.tables)


def _mapped(project: Project, principal: str, opened: _Opened) -> Mapped | None:
    """The policy mapped onto the datasets for ``principal`` and the datasets it may read;
    None when it may read none (or is no principal: the live path refuses it)."""
    key = (id(project.config), principal)
    cached = opened.policies.get(key)
    if cached is not None and cached[0] is project.config:  # not another config at that id
        return cached[1]
    policy = Policy.from_config(project.config)
    try:
        who = policy.principal(principal)
    except GovernError:
        return None
    engine = project.config.warehouse.engine
    mapped = mapped_policy(policy, who, DATASETS, opened.sources, engine)
    found = None
    if mapped is not None:
        reader = mapped.principal(principal)
        readable = tuple(d for d in DATASETS if mapped.access(reader, d.name, list(d.column_names)))
        found = (mapped, readable)
    opened.policies[key] = (project.config, found)
    return found


def _catalog(extract: duckdb.DuckDBPyConnection) -> Catalog:
    where = extract.execute("SELECT current_database(), current_schema()").fetchone()
    assert where is not None
    names = {d.name for d in DATASETS}
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in extract.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_catalog = current_database()"
        " ORDER BY table_name, ordinal_position"
    ).fetchall():
        if table in names:
            tables.setdefault(table, {})[column] = kind
    return Catalog("duckdb", str(where[0]), str(where[1]), tables)
