"""Append-only event facts: one row per source change, dimension keys as of the event.

A fact batch is appended in one warehouse transaction that first deletes every row carrying its
``batch_id`` (the preaction), so a load that died half-way, or a rerun of a loaded batch, never
leaves duplicates; ``(_lsn, _seq)``, the source position on every row, proves it.

An event's time (``event_ts``, and its ``date_key``) is its business time where the table
names an ``event_time`` column, else its source commit time (event_time_of). Each dimension
surrogate key is the version valid at that time (``effective_date <= event_ts < expiry_date``).
An event earlier than every version of its key (facts backfilled from before the dimension's
first version) takes the key's first version: the dimension knows nothing older, and this is
the "beginning of time" row of Kimball's designs. An event whose dimension row has not arrived
yet gets an inferred member (see scd2.inferred_members_statement), which the dimension's first
real version completes in place, keeping the surrogate key the fact already points to.

An append leaves out the updates that change no source column and the deletes of keys that
are not live, and returns their counts; riverbed.load.fact_current says why and how, and holds
the view of the fact's current state, one row per live key, which the loader keeps beside it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from riverbed.lake.schema import COMMIT_TS, OP, POSITION_COLUMNS
from riverbed.load.fact_current import (
    LeftOut,
    appended_changes_query,
    current_indexes,
    left_out,
    staged_changes_query,
)
from riverbed.load.model import DimensionModel, FactModel
from riverbed.load.scd2 import create_index, inferred_members_statement
from riverbed.load.versions import bump, ensure_versions
from riverbed.load.warehouse import Warehouse, capabilities, sql_text

FACT_EXTRA = ("date_key", "event_ts", OP, *POSITION_COLUMNS, "batch_id")
DAY_US = 86_400_000_000
EPOCH = date(1970, 1, 1)
# a batch spanning more months than this keys its dates by the general expression (the
# per-month CASE of _date_key grows with them)
WINDOW_MONTHS = 24

Window = tuple[datetime, datetime]  # a staged batch's first and last event time


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What ``append`` needs to know of a staged batch's rows to insert them in load order."""

    order: tuple[str, ...] = ()  # the insert's ORDER BY (see load_order); empty: in order
    window: Window | None = None  # the first and last event time; None for no rows
    event_time: str | None = None  # the column the window's times came from; None: commit time
    # how many updates and deletes the batch holds, counted on the way in (None: not counted,
    # a plan recorded by an older version): the append need not query staging for them, a
    # scan of every staged row (PostgreSQL: 0.11 s of a 1,000,000-row append, measured)
    changes: tuple[int, int] | None = None


def fact_ddl(fact: FactModel, columns: dict[str, exp.DataType]) -> exp.Create:
    """CREATE TABLE IF NOT EXISTS for the fact: source columns, surrogate keys, position."""
    defs = [_column(name, kind) for name, kind in columns.items()]
    defs += [_column(dim.surrogate, exp.DataType.build("BIGINT")) for _, dim in fact.dimensions]
    defs += [
        _column("date_key", exp.DataType.build("INT")),
        _column("event_ts", exp.DataType.build("TIMESTAMPTZ")),
        _column(OP, exp.DataType.build("TEXT")),
        *(_column(name, exp.DataType.build("BIGINT")) for name in POSITION_COLUMNS),
        _column("batch_id", exp.DataType.build("TEXT")),
    ]
    return exp.Create(
        this=exp.Schema(this=exp.to_table(fact.name), expressions=defs),
        kind="TABLE",
        exists=True,
    )


def fact_indexes(
    fact: FactModel, sort_key: Sequence[str], dist_key: str | None
) -> list[exp.Create]:
    """For an engine with indexes (PostgreSQL): the sort key and the distribution key, which
    queries filter and join on, and ``batch_id``, which every append's preaction and
    inferred-member statements look rows up by; without it each append scans the whole fact
    table three times. (DuckDB needs none: its zone maps and the load order serve.)

    ``batch_id``'s is a BRIN index: batches are appended in order and their ids sort by
    their source position, so each block range holds a narrow span of ids. It costs the
    insert nothing (a B-tree took 1.6 s more per million rows, measured) and keeps the
    preaction to the ranges not yet summarised, the most recent rows. And the current-state
    view's (fact_current.current_indexes), and per dimension the rows its key is missing in
    (_missing_index). ``fact``: with the dimensions whose key columns the table has."""
    keys = [list(sort_key), [dist_key] if dist_key else []]
    indexes = [
        create_index(f"{fact.name}_{'_'.join(group)}_idx", fact.name, group)
        for group in keys
        if group
    ]
    indexes += current_indexes(fact)
    indexes += [_missing_index(fact, dim) for _, dim in fact.dimensions]
    by_batch = create_index(_batch_index(fact), fact.name, ["batch_id"])
    by_batch.this.args["params"].set("using", exp.var("brin"))
    by_batch.this.args["params"].set(
        "with_storage", [exp.Property(this=exp.var("autosummarize"), value=exp.var("on"))]
    )
    return [*indexes, by_batch]


def _missing_index(fact: FactModel, dim: DimensionModel) -> exp.Create:
    """The rows whose ``dim`` key is NULL, by batch: what every append checks for after its
    insert (unresolved_keys_query) and what _infer_missing then updates. Partial, so it holds
    only those rows (usually none) and costs an insert a test per row; without it the check
    read every row of the batch just appended (measured: 0.14 s for 1,000,000 rows, against
    0.02 ms). Its column's other condition, ``batch_id``, narrows it to the batch."""
    index = create_index(f"{fact.name}_{dim.surrogate}_missing", fact.name, ["batch_id"])
    missing = exp.Is(this=exp.column(dim.surrogate, quoted=True), expression=exp.Null())
    index.this.args["params"].set("where", exp.Where(this=missing))
    return index


def summarize_batches(fact: FactModel) -> exp.Select:
    """For an engine with indexes (PostgreSQL): summarise the block ranges of the BRIN index
    on ``batch_id`` that filled since the last time (none if the table has no such index).

    An unsummarised range matches every batch id, so until autovacuum gets to it, the next
    append's preaction and checks read all of it: after a bulk load, the whole table
    (measured: three reads of a 300,000-row table, 45 ms each, for a 1,000-row batch).
    Summarising reads only the new ranges, which the append just wrote."""
    index = exp.func("to_regclass", exp.Literal.string(_batch_index(fact)))
    found = exp.select(index.as_("i")).subquery("x")
    return (
        exp.select(exp.func("brin_summarize_new_values", exp.column("i")))
        .from_(found)
        .where(exp.Not(this=exp.Is(this=exp.column("i"), expression=exp.Null())))
    )


def _batch_index(fact: FactModel) -> str:
    return f"{fact.name}_batch_id_brin"


def load_order(rows: pa.Table, sort_key: Sequence[str]) -> list[str]:
    """The columns a batch's rows must be sorted by as they are appended (the sort key, then
    the source position), or none when ``rows`` already come in that order.

    Load order is how the sort key is honoured (DuckDB's zone maps, a well-clustered heap in
    PostgreSQL); event facts keyed by time mostly arrive in it, and sorting a sorted batch cost
    a sixth of the append. The check is a few vectorised comparisons of neighbouring rows.
    Unsorted, DuckDB's parallel key join may swap neighbouring chunks of a few thousand rows:
    invisible to zone maps, which keep min/max per 122,880-row group."""
    order = [c for c in sort_key if c in rows.column_names] + ["_lsn", "_seq"]
    if rows.num_rows < 2:
        return []
    in_order: pa.Array | None = None  # row i+1 sorts after row i on the columns seen so far
    for name in reversed(order):
        column = rows.column(name)
        if column.null_count:
            return order  # where NULLs sort differs by engine: let the engine sort
        before, after = column.slice(0, len(column) - 1), column.slice(1)
        if in_order is None:
            in_order = pc.greater_equal(after, before)
        else:
            in_order = pc.or_(pc.greater(after, before), pc.and_(pc.equal(after, before), in_order))
    return [] if pc.all(in_order).as_py() else order


def load_plan(rows: pa.Table, sort_key: Sequence[str], event_time: str | None = None) -> Plan:
    """What ``append`` needs to know of a staged batch's rows (its sort-key columns, position,
    ``_op``, ``_commit_ts`` and ``event_time`` column): their load order (see load_order), and
    their window, the first and last event time (None for no rows). PlanOfParts with one
    part."""
    plan = PlanOfParts(sort_key, event_time)
    plan.add(rows)
    return plan.plan()


def append(
    warehouse: Warehouse,
    fact: FactModel,
    columns: list[str],
    batch_ids: Sequence[str],
    plan: Plan,
) -> LeftOut:
    """Append what ``fact``'s staging table holds (the rows of ``batch_ids``) in one
    transaction (see append_statements); ``plan``: their load order and window, as the
    staging load saw them (PlanOfParts) or read back from staging (staging_plan). The rows
    land in load order: staging holds them in it and the engine's plan keeps it, or the
    insert sorts (by the plan's columns, or by staging's row position). What it left out:
    updates that changed nothing, deletes of keys not live (see riverbed.load.fact_current)."""
    dialect = warehouse.dialect
    # only a batch with updates or deletes has anything to leave out: an insert-only batch
    # (most event facts) appends without comparing against the view
    staged = (
        {"u": plan.changes[0], "d": plan.changes[1]}
        if plan.changes is not None
        else warehouse.query(staged_changes_query(fact)).to_pylist()[0]
    )
    changes = bool(staged["u"] or staged["d"])
    preaction, insert = append_statements(
        fact, columns, batch_ids, plan.order, dialect, plan.window, leave_out=changes
    )
    statements = [sql_text(preaction, dialect), sql_text(insert, dialect)]
    if (
        not plan.order
        and fact.dimensions
        and not warehouse.keeps_order(statements[1], fact.staging)
    ):
        # staging is in load order, but the engine would emit it in a dimension's order (it
        # hashes a batch far smaller than the dimension): sort by staging's row position,
        # which costs little beside the join (DuckDB's rowid, measured: 151 ms against 147)
        position = capabilities(dialect).row_position or "rowid"
        insert.expression.order_by(exp.column(position, table="s", quoted=True), copy=False)
        statements[1] = sql_text(insert, dialect)
    ensure_versions(warehouse)
    with warehouse.transaction(), warehouse.unordered():
        # rows the preaction deleted (a rerun of a batch already in): not a pure append
        deleted = warehouse.execute(statements[0])
        warehouse.execute(statements[1])
        bump(warehouse, fact.name, appended=list(batch_ids) if deleted == 0 else None)
        # the inferred-member statements only where a key came back NULL: the check is one
        # scan of the batch's rows for all dimensions, where each dimension's two statements
        # cost two joins (measured: 20 of the 30 ms a 1,000-row append took)
        unresolved = (
            warehouse.query(unresolved_keys_query(fact, batch_ids)).to_pylist()[0]
            if fact.dimensions
            else {}
        )
        for index, (column, dim) in enumerate(fact.dimensions):
            if unresolved[f"d{index}"]:
                for step in _infer_missing(fact, column, dim, batch_ids, dialect):
                    warehouse.execute(step)
                bump(warehouse, dim.name)  # its inferred members
        kept = (
            warehouse.query(appended_changes_query(fact, batch_ids)).to_pylist()[0]
            if changes
            else staged
        )
    if warehouse.has_indexes:
        warehouse.query(summarize_batches(fact))
    return LeftOut(
        unchanged_updates=int(staged["u"]) - int(kept["u"]),
        deletes_without_key=int(staged["d"]) - int(kept["d"]),
    )


class PlanOfParts:
    """load_plan of a batch staged part by part, without keeping the parts: whether each part
    is in order and follows the last row of the one before, the earliest and latest event,
    and how many updates and deletes there are."""

    def __init__(self, sort_key: Sequence[str], event_time: str | None = None):
        self.sort_key = list(sort_key)
        self.event_time = event_time
        self.in_order = True
        self.order: list[str] = []
        self.last: pa.Table | None = None  # the previous part's last row, its order columns
        self.first: datetime | None = None
        self.latest: datetime | None = None
        self.changes: tuple[int, int] | None = (0, 0)  # None: a part without _op

    def add(self, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        if self.changes is not None and OP in rows.column_names:
            ops = rows.column(OP)
            self.changes = (
                self.changes[0] + (pc.sum(pc.equal(ops, "U")).as_py() or 0),
                self.changes[1] + (pc.sum(pc.equal(ops, "D")).as_py() or 0),
            )
        else:
            self.changes = None
        self.order = [c for c in self.sort_key if c in rows.column_names] + ["_lsn", "_seq"]
        ordered = rows.select(self.order)
        if self.in_order:
            head = ordered.slice(0, 1)
            seam = head if self.last is None else pa.concat_tables([self.last, head])
            self.in_order = not load_order(seam, self.sort_key) and not load_order(
                ordered, self.sort_key
            )
        self.last = ordered.slice(rows.num_rows - 1)
        bounds = pc.min_max(event_times(rows, self.event_time)).as_py()
        if bounds["min"] is not None:
            self.first = min(filter(None, (self.first, bounds["min"])))
            self.latest = max(filter(None, (self.latest, bounds["max"])))

    def plan(self) -> Plan:
        window = (self.first, self.latest) if self.first and self.latest else None
        return Plan(
            order=() if self.in_order else tuple(self.order),
            window=window,
            event_time=self.event_time,
            changes=self.changes,
        )

    def to_json(self) -> str:
        """The plan as the state store keeps it (riverbed.state.records.Staging.plan)."""
        plan = self.plan()
        window = plan.window
        return json.dumps(
            {
                "order": list(plan.order),
                "window": [t.isoformat() for t in window] if window else None,
                "event_time": plan.event_time,
                "changes": list(plan.changes) if plan.changes is not None else None,
            }
        )

    @staticmethod
    def from_json(text: str) -> Plan:
        """A plan that to_json gave, of this version or an earlier one."""
        plan = json.loads(text)
        window = plan["window"]
        return Plan(
            order=tuple(plan["order"]),
            window=(
                (datetime.fromisoformat(window[0]), datetime.fromisoformat(window[1]))
                if window
                else None
            ),
            event_time=plan.get("event_time"),  # recorded since business time
            changes=tuple(changes) if (changes := plan.get("changes")) is not None else None,
        )


def staging_plan(warehouse: Warehouse, fact: FactModel, sort_key: Sequence[str]) -> Plan:
    """load_plan of the rows ``fact``'s staging table holds, read from it: the sort-key
    columns it has, the source position and the event time's columns."""
    present = warehouse.columns(fact.staging) or {}
    wanted = [c for c in sort_key if c in present]
    timed = [fact.event_time] if fact.event_time in present else []
    names = [*dict.fromkeys([*wanted, "_lsn", "_seq", OP, COMMIT_TS, *timed])]
    rows = warehouse.query(
        exp.select(*(exp.column(c, quoted=True) for c in names)).from_(fact.staging)
    )
    return load_plan(rows, wanted, fact.event_time)


def append_statements(
    fact: FactModel,
    columns: list[str],
    batch_ids: Sequence[str],
    order_by: Sequence[str],
    dialect: str,
    window: Window | None = None,
    *,
    leave_out: bool = False,
) -> list[exp.Expr]:
    """The fact load of one staged batch, to run in one transaction after the staging load:
    the preaction, then the insert (rows sorted by ``order_by``, see load_order) with every key
    resolved as of its event. ``append`` follows them with the inferred members of the keys the
    insert left NULL (see unresolved_keys_query).

    ``window``, the batch's first and last event time (see load_plan), leaves out of the key
    join every version that expired before the first event (none can be valid at any of the
    batch's events, and a dimension's history grows with every change while the versions a
    batch of recent events can meet stay about one per key), and lets DuckDB compute date keys
    by month (see _date_key_by_month).

    ``leave_out``: the insert skips the updates that change nothing and the deletes of keys
    not live (fact_current.dropped_changes); for a batch with updates or deletes."""
    # built in place (copy=False): sqlglot's builders otherwise deep-copy the statement at
    # every step, which cost more than the SQL text (3 ms of a small batch's append)
    preaction = exp.Delete(
        this=exp.to_table(fact.name), where=exp.Where(this=_of_batches("batch_id", None, batch_ids))
    )
    stg = exp.to_table(fact.staging, alias="s")
    select = exp.select(*(exp.column(c, table="s", quoted=True) for c in columns)).from_(
        stg, copy=False
    )
    target_columns = list(columns)
    event = event_time_of(fact, "s")
    for index, (column, dim) in enumerate(fact.dimensions):
        alias = f"d{index}"
        on = _as_of(dim, alias, "s", column, event.copy())
        if window is not None:
            since = _timestamp(window[0])
            expired = exp.GT(this=exp.column("expiry_date", table=alias), expression=since)
            on = exp.and_(on, expired, copy=False)
        dim_table = exp.to_table(dim.name, alias=alias)
        select = select.join(dim_table, on=on, join_type="left", copy=False)
        select = select.select(exp.column(dim.surrogate, table=alias), copy=False)
        target_columns.append(dim.surrogate)
    select = select.select(
        _date_key(event.copy(), dialect, window),
        event,
        exp.column("_op", table="s"),
        exp.column("_lsn", table="s"),
        exp.column("_seq", table="s"),
        exp.column("_batch_id", table="s"),
        copy=False,
    )
    target_columns += list(FACT_EXTRA)
    if leave_out:
        select = select.where(left_out(fact, columns, "s"), copy=False)
    if order_by:
        select = select.order_by(
            *(exp.column(c, table="s", quoted=True) for c in order_by), copy=False
        )
    target = exp.Schema(
        this=exp.to_table(fact.name),
        expressions=[exp.to_identifier(c, quoted=True) for c in target_columns],
    )
    return [preaction, exp.Insert(this=target, expression=select)]


def event_time_of(fact: FactModel, table: str) -> exp.Expr:
    """The time of the staged row ``table``: its ``event_time`` column as TIMESTAMPTZ (a date
    is its midnight, a timestamp without a zone is UTC: the warehouses' sessions run in UTC),
    the commit time where that is NULL, and the commit time for a delete, which carries no
    business time of its own (only its key). Without event_time, the commit time."""
    commit = exp.column(COMMIT_TS, table=table, quoted=True)
    if fact.event_time is None:
        return commit
    business = exp.cast(exp.column(fact.event_time, table=table, quoted=True), "TIMESTAMPTZ")
    return exp.Case(
        ifs=[exp.If(this=exp.column(OP, table=table).eq(exp.Literal.string("D")), true=commit)],
        default=exp.Coalesce(this=business, expressions=[commit.copy()]),
    )


def event_times(rows: pa.Table, event_time: str | None) -> pa.ChunkedArray:
    """event_time_of for staged rows in Arrow, as UTC instants: what a batch's window is."""
    commit = rows.column(COMMIT_TS)
    if event_time is None or event_time not in rows.column_names:
        return commit
    business = rows.column(event_time)
    if pa.types.is_date(business.type):
        business = business.cast(pa.timestamp("us"))
    # a timestamp without a zone takes UTC's, as the warehouse reads it; one with a zone is
    # the same instant in UTC
    business = business.cast(pa.timestamp("us", tz="UTC"))
    deleted = pc.equal(rows.column(OP), "D")
    return pc.if_else(deleted, commit, pc.coalesce(business, commit))


def unresolved_keys_query(fact: FactModel, batch_ids: Sequence[str]) -> exp.Select:
    """One row: per dimension (``d0``, ``d1``, ...), whether a row of ``batch_ids`` in the
    fact names a key (not NULL) but holds no surrogate key, so needs _infer_missing."""
    checks = []
    for index, (column, dim) in enumerate(fact.dimensions):
        unresolved = exp.select(exp.Literal.number(1)).from_(exp.to_table(fact.name), copy=False)
        unresolved = unresolved.where(
            _unresolved(dim, batch_ids, None),
            exp.Not(this=exp.Is(this=exp.column(column, quoted=True), expression=exp.Null())),
            copy=False,
        )
        checks.append(exp.Exists(this=unresolved).as_(f"d{index}", copy=False))
    return exp.select(*checks)


def _unresolved(
    dim: DimensionModel, batch_ids: Sequence[str] | None, table: str | None
) -> exp.Expr:
    """The rows of ``batch_ids`` (of every batch: None; the fact as ``table``) whose ``dim``
    key is NULL."""
    missing = exp.Is(
        this=exp.column(dim.surrogate, table=table, quoted=True), expression=exp.Null()
    )
    if batch_ids is None:
        return missing
    return exp.and_(_of_batches("batch_id", table, batch_ids), missing, copy=False)


def backfill_keys(warehouse: Warehouse, fact: FactModel, column: str, dim: DimensionModel) -> None:
    """Key every row of ``fact`` whose ``dim`` key is NULL as an append would have: the fact
    table gained the key's column (a dimension added to the config later), so the rows
    loaded before have none. In one transaction; rows a key cannot resolve stay NULL."""
    ensure_versions(warehouse)
    with warehouse.transaction():
        for step in _infer_missing(fact, column, dim, None, warehouse.dialect):
            warehouse.execute(step)
        bump(warehouse, fact.name)
        bump(warehouse, dim.name)


def _infer_missing(
    fact: FactModel,
    column: str,
    dim: DimensionModel,
    batch_ids: Sequence[str] | None,
    dialect: str,
) -> list[exp.Expr]:
    """Inferred members for the batch's keys (every batch's: None) the join found no row
    for, then those rows' keys.

    Done after the insert, on the few rows whose key came back NULL, rather than before it on
    the whole batch: the anti-join of every staged row against the dimension cost as much as
    the key join itself. A NULL key whose dimension has rows, just none valid at the event,
    stays NULL (the NOT EXISTS of the inferred insert; the update's as-of condition)."""
    missing = _unresolved(dim, batch_ids, "f")
    infer = inferred_members_statement(dim, fact.name, column, dialect, where=missing)
    fill = exp.update(
        exp.to_table(fact.name, alias="f"),
        {dim.surrogate: exp.column(dim.surrogate, table="d", quoted=True)},
        from_=exp.From(this=exp.to_table(dim.name, alias="d")),
        where=exp.and_(
            missing.copy(),
            _as_of_or_first(dim, "d", "f", column, exp.column("event_ts", table="f")),
        ),
    )
    return [infer, fill]


def _as_of_or_first(
    dim: DimensionModel, alias: str, fact_alias: str, column: str, event: exp.Expr
) -> exp.Expr:
    """_as_of, or for an event earlier than every version of the key (zero-length ones too:
    each is a version), the key's first version of non-zero length. The key's equality is
    the one condition outside the OR, so the engine still joins on it."""
    d = functools.partial(exp.column, table=alias, quoted=True)
    e = functools.partial(exp.column, table="e", quoted=True)
    valid = exp.and_(
        exp.LTE(this=d("effective_date"), expression=event),
        exp.GT(this=d("expiry_date"), expression=event.copy()),
    )
    # a version of the key that starts at or before the event, or a lasting one before d
    before = (
        exp.select(exp.Literal.number(1))
        .from_(exp.to_table(dim.name, alias="e"))
        .where(
            _eq(e(dim.keys[0]), d(dim.keys[0])),
            exp.or_(
                exp.LTE(this=e("effective_date"), expression=event.copy()),
                exp.and_(
                    exp.LT(this=e("effective_date"), expression=d("effective_date")),
                    exp.GT(this=e("expiry_date"), expression=e("effective_date")),
                ),
            ),
        )
    )
    first = exp.and_(
        exp.GT(this=d("expiry_date"), expression=d("effective_date")),
        exp.Not(this=exp.Exists(this=before)),
    )
    return exp.and_(
        _eq(d(dim.keys[0]), exp.column(column, table=fact_alias, quoted=True)),
        exp.paren(exp.or_(exp.paren(valid), exp.paren(first))),
    )


def _as_of(
    dim: DimensionModel, alias: str, fact_alias: str, column: str, event: exp.Expr
) -> exp.Expr:
    """The version of ``dim`` (as ``alias``) whose key is the fact's ``column`` and that was
    valid at ``event``: ``effective_date <= event < expiry_date``."""
    return exp.and_(
        _eq(
            exp.column(dim.keys[0], table=alias, quoted=True),
            exp.column(column, table=fact_alias, quoted=True),
        ),
        exp.LTE(this=exp.column("effective_date", table=alias), expression=event),
        exp.GT(this=exp.column("expiry_date", table=alias), expression=event.copy()),
        copy=False,
    )


def _date_key(event: exp.Expr, dialect: str, window: Window | None = None) -> exp.Expr:
    """yyyymmdd of the event's UTC day, as an INT, by arithmetic (a string per row costs more
    than the key join)."""
    can = capabilities(dialect)
    if window is not None and (can.epoch_functions or can.date_difference):
        by_month = _date_key_by_month(window, _day_number(event, dialect))
        if by_month is not None:
            return by_month
    if can.epoch_functions:
        # EXTRACT on a TIMESTAMPTZ goes through ICU's calendar for every row; the same instant
        # as a plain UTC TIMESTAMP is integer arithmetic (a third of the append's cost, measured),
        # and its DATE a quarter cheaper again
        event = exp.cast(exp.func("make_timestamp", exp.func("epoch_us", event)), "DATE")

    def part(unit: str) -> exp.Expr:
        return exp.Extract(this=exp.var(unit), expression=event.copy())

    return exp.cast(part("YEAR") * 10000 + part("MONTH") * 100 + part("DAY"), "INT")


def _day_number(event: exp.Expr, dialect: str) -> exp.Expr:
    """The event's UTC day as days since 1970-01-01 (a dialect with epoch_functions or
    date_difference; the warehouse's session runs in UTC)."""
    if capabilities(dialect).epoch_functions:
        return exp.IntDiv(
            this=exp.func("epoch_us", event.copy()), expression=exp.Literal.number(DAY_US)
        )
    epoch = exp.cast(exp.Literal.string(EPOCH.isoformat()), "DATE")
    return exp.paren(exp.Sub(this=exp.cast(event.copy(), "DATE"), expression=epoch))


def _date_key_by_month(window: Window, day: exp.Expr) -> exp.Expr | None:
    """The date key of an event in ``window`` whose day number (_day_number) is ``day``: the
    day number plus a constant per calendar month the window touches: ``day + (yyyymm01 -
    first day of the month)``. A division (or a subtraction) and an addition per row, where
    three calendar conversions cost three times the rest of the date work (measured on 1M
    rows). None before 1970 (integer division truncates towards zero there) or when the
    window spans more than WINDOW_MONTHS months."""
    first, last = (t.astimezone(UTC).date() for t in window)
    if first < EPOCH:
        return None
    starts: list[date] = []
    month = first.replace(day=1)
    while month <= last:
        starts.append(month)
        if len(starts) > WINDOW_MONTHS:
            return None
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)

    def offset(start: date) -> exp.Expr:
        key = start.year * 10000 + start.month * 100 + 1
        return exp.Literal.number(key - (start - EPOCH).days)

    shift: exp.Expr = offset(starts[-1])
    if len(starts) > 1:
        shift = exp.Case(
            ifs=[
                exp.If(
                    this=exp.LT(this=day.copy(), expression=exp.Literal.number((nxt - EPOCH).days)),
                    true=offset(start),
                )
                for start, nxt in zip(starts, starts[1:])
            ],
            default=shift,
        )
    return exp.cast(exp.Add(this=day, expression=exp.Paren(this=shift)), "INT")


def _timestamp(at: datetime) -> exp.Expr:
    return exp.cast(exp.Literal.string(at.isoformat()), "TIMESTAMPTZ")


def _column(name: str, kind: exp.DataType) -> exp.ColumnDef:
    return exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=kind)


def _of_batches(column: str, table: str | None, batch_ids: Sequence[str]) -> exp.Expr:
    """``column IN ('b1', ...)``: the rows of these batches."""
    return exp.column(column, table=table).isin(
        *(exp.Literal.string(b) for b in batch_ids), copy=False
    )


def _eq(left: exp.Expr, right: exp.Expr) -> exp.EQ:
    return exp.EQ(this=left, expression=right)
