"""The load stage: staged batches -> staging tables -> SCD2 dimensions -> event facts.

Three steps, which the orchestrator runs as states of its machine (and ``run_load`` in a row):

1. ``stage(table)``: truncate-and-load the table's staging table with its pending staged batches
   (every batch not loaded yet, in source order, one at a time so memory stays bounded; a batch
   with a different column set waits for the next round, so a merge never mistakes a column a
   batch did not have for one set to NULL). The state store then records what staging holds
   (``store.loads.stage``).
2. ``merge_dimension(dim)``: the SCD2 MERGE statements over what staging holds, in one warehouse
   transaction; every dimension before any fact (facts resolve their keys as of the event).
3. ``append_fact(fact)``: preaction (delete the staged batch ids) + insert, one transaction,
   leaving out the changes that say nothing (riverbed.load.fact_current); the fact's
   current-state view is created first, or replaced when the table's columns changed.

Steps 2 and 3 are idempotent (a dimension ignores events at or below its applied position; a
fact deletes its batch ids before inserting), so the state store records batches as loaded
only after the warehouse committed them, and a crash in between just applies them again with
the same result. Staging is a real table: a run that failed after staging resumes from it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp
from sqlglot.errors import ParseError

from riverbed.config.loader import Project
from riverbed.errors import RiverbedError
from riverbed.lake.lock import project_lock
from riverbed.lake.parquet import read_schema, read_table
from riverbed.lake.reader import as_pg_text, concat_versions
from riverbed.lake.schema import CDC_COLUMNS, OP
from riverbed.lake.storage import LakeStorage, open_storage
from riverbed.load.ddl import (
    check_business_time,
    check_layout_keys,
    dim_date_ddl,
    lake_columns,
)
from riverbed.load.fact_current import LeftOut, current_view_ddl, drop_current_view
from riverbed.load.facts import (
    Plan,
    PlanOfParts,
    append,
    backfill_keys,
    fact_ddl,
    fact_indexes,
    staging_plan,
)
from riverbed.load.model import (
    STAGING_CDC_TYPES,
    DimensionModel,
    FactModel,
    holding_type,
    same_type,
    sql_type,
    warehouse_model,
)
from riverbed.load.scd2 import (
    dimension_ddl,
    late_versions_query,
    position_query,
    positions_ddl,
    scd2_sql,
    staging_ddl,
)
from riverbed.load.versions import bump, ensure_versions
from riverbed.load.warehouse import Warehouse, WarehouseError, open_warehouse
from riverbed.observe.logs import log_event
from riverbed.state import LakeFile, LoadBatch, Staging, StateStore, open_state

log = logging.getLogger("riverbed.load")


@dataclass
class LoadResult:
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        return sum(t["batches"] for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "batches": self.batches, "tables": self.tables}


@dataclass(frozen=True)
class StagedBatch:
    table: str
    batch_id: str
    files: tuple[LakeFile, ...]

    @property
    def max_lsn(self) -> int:
        return max(f.max_lsn for f in self.files)


class Loader:
    def __init__(
        self, project: Project, storage: LakeStorage, manifest: StateStore, warehouse: Warehouse
    ):
        self.project = project
        self.config = project.config
        self.storage = storage
        self.manifest = manifest
        self.warehouse = warehouse
        self.model = warehouse_model(project.config)

    def run(self, tables: Sequence[str] | None = None) -> LoadResult:
        """Everything pending, in rounds (see stage_round): what a round staged is merged,
        dimensions first, then appended."""
        started = time.monotonic()
        result = LoadResult()
        chosen = set(tables) if tables else set(self.config.tables)
        self.prepare(chosen)
        while staged := self.stage_round(chosen):
            for dim in self.model.dimensions:
                if staged.get(dim.source):
                    _add(result, dim.name, dim.source, self.merge_dimension(dim))
            for fact in self.model.facts:
                if staged.get(fact.source):
                    batches, rows, left = self.append_fact(fact)
                    _add(result, fact.name, fact.source, (batches, rows), left)
        result.seconds = time.monotonic() - started
        return result

    def prepare(self, tables: set[str]) -> None:
        """Before anything is staged: reprocessed fact batches withdrawn, dim_date there."""
        models: list[DimensionModel | FactModel] = [*self.model.dimensions, *self.model.facts]
        for model in models:
            if model.source in tables:
                self._withdraw(model)
        if any(d.source in tables for d in self.model.dimensions):
            # before the dimensions merge in parallel: two first merges creating the shared
            # table at once conflict in DuckDB's catalog
            self.warehouse.execute(positions_ddl())
        if self.model.facts:
            self._ensure_dim_date()
        ensure_versions(self.warehouse)  # before the branches bump in parallel

    def stage_round(self, tables: set[str]) -> dict[str, int]:
        """Stage every chosen dimension with pending batches, and the facts too unless a
        dimension still has batches this round could not take (facts resolve their keys as of
        the event, so every earlier version must be merged first). Table -> batches staged;
        empty when nothing is pending."""
        dims = [d.source for d in self.model.dimensions if d.source in tables]
        staged = {table: self.stage(table) for table in dims}
        left = sum(len(self.pending(table)) for table in dims) - sum(staged.values())
        if left <= 0:
            staged |= {
                f.source: self.stage(f.source) for f in self.model.facts if f.source in tables
            }
        return {table: n for table, n in staged.items() if n}

    def stage(self, table: str) -> int:
        """Truncate-and-load ``table``'s staging table with its pending batches (those with the
        first one's column set); the number of batches staged. A staging table that holds
        batches not applied yet (a run that died after staging) is kept as it is."""
        held = self._staged(table)
        if held is not None:
            return len(held)
        pending = self.pending(table)
        if not pending:
            return 0
        model = self.model.by_source(table)
        dialect = self.warehouse.dialect
        columns = _source_columns(self._schema(pending[0]))
        taken = [pending[0]]
        for batch in pending[1:]:
            if _source_columns(self._schema(batch)) != columns:
                break  # the next round stages it, with its own column set
            taken.append(batch)
        ddl = staging_ddl(model if isinstance(model, DimensionModel) else table, columns, dialect)
        # before staging changes: a conflict leaves all as is
        check_business_time(table, self.config.tables[table], columns)
        self._check_types(model, columns)
        self._ensure(model.staging, [ddl], columns, staging=True)
        rows = 0
        # a fact's load order and window, seen on the parts as they go in: reading them back
        # from staging costs a query of every staged row (on PostgreSQL, a second per million)
        cfg = self.config.tables[table]
        plan = PlanOfParts(cfg.sort_key, cfg.event_time)
        with self.warehouse.transaction():
            # TRUNCATE, not DELETE: PostgreSQL keeps a deleted row's space until a vacuum, so
            # each load was appended after the last one's dead rows and every scan of staging
            # read them all (measured: 17,000 pages for 140,000 rows after a 1,000,000-row
            # load, the merge's four scans of staging 0.13 s against 0.04 s); DuckDB deletes
            # the rows either way
            self.warehouse.execute(exp.TruncateTable(expressions=[exp.to_table(model.staging)]))
            for batch in taken:
                part = _for_staging(self._read(batch))
                part = part.append_column(
                    "_batch_id", pa.array([batch.batch_id] * part.num_rows, pa.string())
                )
                rows += self.warehouse.load_arrow(model.staging, part)
                if isinstance(model, FactModel):
                    plan.add(part)
        self.warehouse.analyze(model.staging)
        self.manifest.loads.stage(
            Staging(
                table=table,
                batch_ids=tuple(b.batch_id for b in taken),
                rows=rows,
                staged_at=time.time(),
                plan=plan.to_json() if isinstance(model, FactModel) else None,
            )
        )
        return len(taken)

    def merge_dimension(self, dim: DimensionModel) -> tuple[list[str], int]:
        """Apply what ``dim``'s staging holds (see stage); (batch ids, rows)."""
        batches = self._staged(dim.source)
        if not batches:
            return [], 0
        columns = self._staged_columns(dim.source, batches)
        dialect = self.warehouse.dialect
        ddl = dimension_ddl(dim, columns, dialect, indexes=self.warehouse.has_indexes)
        check_layout_keys(dim.source, self.config.tables[dim.source], ddl)
        self._ensure(dim.name, ddl, columns)
        started = time.monotonic()
        since = self._position(dim) if dim.effective_from else None
        ensure_versions(self.warehouse)
        with self.warehouse.transaction():
            for statement in scd2_sql(dim, columns, dialect):
                self.warehouse.execute(statement)
            bump(self.warehouse, dim.name)
        if dim.effective_from:
            self._say_late_versions(dim, since)
        loaded = self._loaded(dim.source, dim.name, batches, started)
        self.warehouse.analyze(dim.name, changed=loaded)
        return batches, loaded

    def _position(self, dim: DimensionModel) -> tuple[int, int] | None:
        rows = self.warehouse.query(position_query(dim)).to_pylist()
        return (int(rows[0]["_lsn"]), int(rows[0]["_seq"])) if rows else None

    def _say_late_versions(self, dim: DimensionModel, since: tuple[int, int] | None) -> None:
        """Warn when versions the merge started begin after their business time: their
        effective_from was not after the version before them, so that one was left
        zero-length. The merge is right by the rules (README, Business time); the warning is
        for an application that does not set the column on every change."""
        late = int(self.warehouse.query(late_versions_query(dim, since)).to_pylist()[0]["n"])
        if late:
            column = f"{dim.source}.{dim.effective_from}"
            log_event(
                log,
                "versions_after_business_time",
                f"{dim.name}: {late} new version{'s' if late != 1 else ''} had a {column} no "
                "later than the version before, so each starts where that one started and "
                "leaves it zero-length; if the application does not set "
                f"{dim.effective_from} on every change, remove tables.{dim.source}."
                "effective_from to date versions by commit time",
                logging.WARNING,
                table=dim.source,
                versions=late,
            )

    def append_fact(self, fact: FactModel) -> tuple[list[str], int, LeftOut]:
        """Append what ``fact``'s staging holds (see stage) and (re)create its current-state
        view; (batch ids, rows staged, what the append left out)."""
        staging = self.manifest.loads.staging(fact.source)
        if staging is None or not staging.batch_ids:
            return [], 0, LeftOut()
        batches = list(staging.batch_ids)
        columns = self._staged_columns(fact.source, batches)
        cfg = self.config.tables[fact.source]
        # a dimension with nothing loaded yet is created from its lake schema, so its members
        # can be inferred; one with no data at all leaves its key NULL
        carried = fact.carrying(columns)
        refs = tuple(
            (column, dim) for column, dim in carried.dimensions if self._dimension_exists(dim)
        )
        usable = replace(fact, dimensions=refs)
        # against every column the fact will have, whether or not its dimensions exist yet
        check_layout_keys(fact.source, cfg, [fact_ddl(carried, columns)])
        # PostgreSQL refuses to change the type of a column a view reads: the view goes first,
        # and comes back with the table's columns as they are now
        # a dimension's surrogate key too: a dimension added to the config later (or a key
        # column that starts keying into one) adds its column, NULL on the rows loaded before
        keyed = {dim.surrogate: exp.DataType.build("BIGINT") for _, dim in usable.dimensions}
        before = self.warehouse.columns(fact.name)
        self._ensure(
            fact.name,
            [fact_ddl(usable, columns)],
            {**columns, **keyed},
            before_alter=[drop_current_view(fact)],
        )
        self._ensure_current_view(fact)
        gained = (
            [] if before is None else [d for d in usable.dimensions if d[1].surrogate not in before]
        )
        for column, dim in gained:
            backfill_keys(self.warehouse, usable, column, dim)
        if self.warehouse.has_indexes:  # every time: a table from an older version gets them
            for index in fact_indexes(usable, cfg.sort_key, cfg.dist_key):
                self.warehouse.execute(index)
        started = time.monotonic()
        left = append(self.warehouse, usable, list(columns), batches, self._plan(fact, staging))
        loaded = self._loaded(fact.source, fact.name, batches, started)
        self.warehouse.analyze(fact.name, changed=loaded)
        return batches, loaded, left

    def _ensure_current_view(self, fact: FactModel) -> None:
        """Create ``fact``'s current-state view, or replace it when the table's columns are
        no longer the view's (a column added, or the view dropped for a widening). Not on
        every append: on PostgreSQL, replacing a view waits for every query reading it."""
        table = [c for c in self.warehouse.columns(fact.name) or {} if c != OP]
        if list(self.warehouse.columns(fact.view) or {}) != table:
            self.warehouse.execute(current_view_ddl(fact, table))

    def _plan(self, fact: FactModel, staging: Staging) -> Plan:
        """The load order and window of what ``fact``'s staging holds: as its staging load saw
        them, or, for staging loaded by a version that did not record them, read back."""
        if staging.plan is not None:
            plan = PlanOfParts.from_json(staging.plan)
            # a window of other times (event_time changed since the staging load) would key
            # dates by the wrong months
            if plan.event_time == fact.event_time:
                return plan
        return staging_plan(self.warehouse, fact, self.config.tables[fact.source].sort_key)

    def _staged(self, table: str) -> list[str] | None:
        staging = self.manifest.loads.staging(table)
        return list(staging.batch_ids) if staging is not None else None

    def _staged_columns(self, table: str, batch_ids: list[str]) -> dict[str, exp.DataType]:
        by_id = {b.batch_id: b for b in self.pending(table)}
        missing = [b for b in batch_ids if b not in by_id]
        if missing:  # loaded meanwhile, or withdrawn: staging is stale, stage again
            self.manifest.loads.unstage(table)
            raise WarehouseError(
                f"staging of {table} holds batches that are no longer pending "
                f"({', '.join(missing[:3])}); it is staged again on the next attempt",
                transient=True,
            )
        return _source_columns(self._schema(by_id[batch_ids[0]]))

    def _loaded(self, source: str, target: str, batch_ids: list[str], started: float) -> int:
        """Record the staged batches as loaded, once the warehouse committed them."""
        staging = self.manifest.loads.staging(source)
        count = staging.rows if staging is not None else 0
        seconds = time.monotonic() - started
        now = time.time()
        self.manifest.loads.record_loaded(
            LoadBatch(
                batch_id=batch_id,
                table=source,
                target=target,
                rows=count,
                seconds=seconds,
                loaded_at=now,
            )
            for batch_id in batch_ids
        )
        return count

    def _withdraw(self, fact: FactModel | DimensionModel) -> None:
        """Take out the rows of fact batches the transform withdrew (`run --reprocess`): their
        events come back in the batches that replace them, and must not be there twice. (A
        dimension keeps its versions: the merge ignores events it has applied already.)"""
        withdrawn = self.manifest.transform.withdrawn(fact.source)
        if not withdrawn:
            return
        if isinstance(fact, FactModel) and self.warehouse.columns(fact.name) is not None:
            ensure_versions(self.warehouse)
            with self.warehouse.transaction():
                self.warehouse.execute(
                    exp.delete(
                        fact.name,
                        where=exp.column("batch_id").isin(
                            *(exp.Literal.string(b) for b in withdrawn)
                        ),
                    )
                )
                bump(self.warehouse, fact.name)
        with self.manifest.transaction():
            self.manifest.loads.forget_loaded(fact.source, withdrawn)
            self.manifest.transform.forget_withdrawn(fact.source, withdrawn)

    def pending(self, table: str) -> list[StagedBatch]:
        """Staged batches of ``table`` not loaded yet, in source order."""
        grouped: dict[str, list[LakeFile]] = defaultdict(list)
        for file in self.manifest.loads.unloaded([table]):
            batch_id = file.batch_id
            if batch_id is None:
                raise RiverbedError(f"staged file {file.path} is not under a batch=<id> folder")
            grouped[batch_id].append(file)
        batches = [StagedBatch(table, b, tuple(files)) for b, files in grouped.items()]
        return sorted(batches, key=lambda b: (b.max_lsn, b.batch_id))

    def _dimension_exists(self, dim: DimensionModel) -> bool:
        if self.warehouse.columns(dim.name) is not None:
            return True
        columns = lake_columns(self.storage, self.manifest, dim.source)
        if columns is None or any(k not in columns for k in dim.keys):
            return False
        dialect = self.warehouse.dialect
        for statement in dimension_ddl(dim, columns, dialect, indexes=self.warehouse.has_indexes):
            self.warehouse.execute(statement)
        return True

    def _ensure_dim_date(self) -> None:
        """dim_date, created and filled once: every day from 2000 to 2040 (facts carry its
        date_key, yyyymmdd of the event)."""
        if self.warehouse.columns("dim_date") is not None:
            return
        days = np.arange(np.datetime64("2000-01-01"), np.datetime64("2041-01-01"))
        dates = pa.array(days, pa.date32())
        years = pc.year(dates)
        months = pc.month(dates)
        weekday = pc.day_of_week(dates)  # Monday = 0
        table = pa.table(
            {
                "date_key": pc.cast(pc.strftime(dates, "%Y%m%d"), pa.int32()),
                "date": dates,
                "year": pc.cast(years, pa.int32()),
                "quarter": pc.cast(pc.quarter(dates), pa.int32()),
                "month": pc.cast(months, pa.int32()),
                "month_name": pc.strftime(dates, "%B"),
                "day": pc.cast(pc.day(dates), pa.int32()),
                "day_of_week": pc.cast(weekday, pa.int32()),
                "is_weekend": pc.greater_equal(weekday, 5),
            }
        )
        with self.warehouse.transaction():
            self.warehouse.execute(dim_date_ddl())
            self.warehouse.load_arrow("dim_date", table)

    def _schema(self, batch: StagedBatch) -> pa.Schema:
        return read_schema(self.storage, batch.files[0].path)

    def _read(self, batch: StagedBatch) -> pa.Table:
        parts = [read_table(self.storage, f.path) for f in batch.files]
        return concat_versions(parts)

    def _ensure(
        self,
        table: str,
        ddl: Sequence[exp.Expr],
        columns: dict[str, exp.DataType],
        *,
        staging: bool = False,
        before_alter: Sequence[exp.Expr] = (),
    ) -> None:
        """Create the table, or evolve it to a newer schema version: add the columns it brought
        (a column the source dropped stays, NULL from then on) and widen those whose type it
        changed to one that holds the old and the new values (model.holding_type; a change
        no type holds was refused by _check_types before anything was staged).
        ``before_alter``: run once before the first widening (dropping a view that reads the
        table)."""
        existing = self.warehouse.columns(table)
        if existing is None:
            for statement in ddl:
                self.warehouse.execute(statement)
            return
        wanted = dict(columns)
        if staging:
            wanted.update(_staging_cdc_types())
        for name, kind in wanted.items():
            if name not in existing:
                action: exp.Expr = exp.ColumnDef(
                    this=exp.to_identifier(name, quoted=True), kind=kind
                )
            else:
                wider, _ = self._widening(existing[name], kind)
                if wider is None:
                    continue
                action = exp.AlterColumn(this=exp.to_identifier(name, quoted=True), dtype=wider)
                for statement in before_alter:
                    self.warehouse.execute(statement)
                before_alter = ()
            self.warehouse.execute(
                exp.Alter(this=exp.to_table(table), kind="TABLE", actions=[action])
            )

    def _check_types(
        self, model: DimensionModel | FactModel, columns: dict[str, exp.DataType]
    ) -> None:
        """Every column whose type the source changed can be widened on each table that carries
        it (staging, the dimension or fact); else one error that names them, and the fix."""
        conflicts: dict[str, list[tuple[str, str]]] = defaultdict(list)  # column -> (table, type)
        for table in (model.staging, model.name):
            existing = self.warehouse.columns(table) or {}
            for name, kind in columns.items():
                if name in existing and not self._widening(existing[name], kind)[1]:
                    conflicts[name].append((table, existing[name]))
        if not conflicts:
            return
        dialect = self.warehouse.dialect
        parts = []
        for name, tables in conflicts.items():
            new = columns[name].sql(dialect=dialect)
            column = exp.to_identifier(name, quoted=True)
            # the load recreates the fact's view, which PostgreSQL will not let the ALTER
            # change under it
            drop = (
                [drop_current_view(model).sql(dialect=dialect)]
                if isinstance(model, FactModel) and any(t == model.name for t, _ in tables)
                else []
            )
            fixes = "; ".join(
                drop
                + [
                    exp.Alter(
                        this=exp.to_table(table),
                        kind="TABLE",
                        actions=[
                            exp.AlterColumn(
                                this=column,
                                dtype=columns[name],
                                using=exp.cast(column, columns[name]),
                            )
                        ],
                    ).sql(dialect=dialect)
                    for table, _ in tables
                ]
            )
            held = ", ".join(f"{table}: {kind}" for table, kind in tables)
            parts.append(
                f"column {column.sql(dialect=dialect)} is {new} in the source now, and no type "
                f"holds both that and what the warehouse has ({held}) without losing data. If "
                f"every value converts, convert the warehouse's columns yourself: {fixes}"
            )
        raise WarehouseError(
            f"cannot load {model.source} into {model.name}: {' '.join(parts)}; or change the "
            f"source column back. Then run again: nothing of {model.source} was loaded or "
            "altered, its batches wait in the lake."
        )

    def _widening(self, type_name: str, kind: exp.DataType) -> tuple[exp.DataType | None, bool]:
        """What a warehouse column of ``type_name`` becomes to take the lake's ``kind``: (the
        wider type to alter it to, None to leave it as it is; whether it can take ``kind`` at
        all, see model.holding_type). A type name sqlglot cannot read (a type the loader never
        creates) is left as it is."""
        parsed = _parse_type(type_name, self.warehouse.dialect)
        if parsed is None:
            return None, True
        current = parsed.copy()
        held = holding_type(current, kind)
        if held is None:
            return None, False
        return (None if same_type(held, current) else held), True


@functools.lru_cache(maxsize=512)
def _parse_type(type_name: str, dialect: str) -> exp.DataType | None:
    # every staged table's columns are parsed on every run, a few times each (40 to 100 us a
    # parse): a handful of distinct names
    try:
        return exp.DataType.build(type_name, dialect=dialect)
    except (ParseError, ValueError):
        return None


def _add(
    result: LoadResult,
    target: str,
    source: str,
    applied: tuple[list[str], int],
    left: LeftOut | None = None,
) -> None:
    entry = result.tables.setdefault(target, {"source": source, "batches": 0, "rows": 0})
    entry["batches"] += len(applied[0])
    entry["rows"] += applied[1]
    for name, count in (left.as_dict() if left is not None else {}).items():
        entry[name] = entry.get(name, 0) + count


def _source_columns(schema: pa.Schema) -> dict[str, exp.DataType]:
    return {f.name: sql_type(f.type) for f in schema if f.name not in CDC_COLUMNS}


def _staging_cdc_types() -> dict[str, exp.DataType]:
    return {name: exp.DataType.build(kind) for name, kind in STAGING_CDC_TYPES.items()}


def _for_staging(rows: pa.Table) -> pa.Table:
    """The staged rows as the staging table holds them: lists as text, marks comma-joined."""
    out = rows.drop_columns([c for c in ("_xid",) if c in rows.column_names])
    for index, field_ in enumerate(out.schema):
        if field_.name == "_toast_unchanged":
            joined = pc.binary_join(out.column(index), ",")
            out = out.set_column(index, pa.field("_toast_unchanged", pa.string()), joined)
        elif pa.types.is_list(field_.type) or pa.types.is_large_list(field_.type):
            text = as_pg_text(out.column(index))  # PostgreSQL's {a,b} notation
            out = out.set_column(index, pa.field(field_.name, pa.string()), text)
    if "_toast_unchanged" not in out.column_names:
        out = out.append_column("_toast_unchanged", pa.nulls(out.num_rows, pa.string()))
    return out


def run_load(project: Project, *, tables: Sequence[str] | None = None) -> LoadResult:
    """Load every staged batch not loaded yet into the warehouse."""
    cfg = project.config
    storage = open_storage(cfg.lake, project.root)
    with project_lock(project, "load", "riverbed run (load)"):
        manifest = open_state(project)
        warehouse = open_warehouse(cfg.warehouse, project.root)
        try:
            return Loader(project, storage, manifest, warehouse).run(tables)
        finally:
            warehouse.close()
            manifest.close()
