"""The limit of an SCD2 merge on DuckDB for bench/load.py: a hand-written full-compare merge.

Not a benchmark itself. What tools that diff whole tables do (a snapshot compared with the
dimension's current rows, as dbt's check strategy does): the source's state after the batch,
one row per key (every key, changed or not), compared column by column with the dimension's
current row; an UPDATE expires the current rows whose tracked values differ, an INSERT adds
a version for every key left with no current row. Two statements, one transaction, over the
same dimension and the same changes as Riverbed's merge. It is simpler than Riverbed's merge
(one version per key and batch, no type1 overwrite, no deletes, no TOAST, no rerun guard),
so it bounds from below what any merge of these changes costs when the changes are found by
comparing; Riverbed knows them from the change events and should need less.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from riverbed.load.model import FAR_FUTURE, DimensionModel
from riverbed.load.scd2 import staging_ddl
from riverbed.load.warehouse import Warehouse

SOURCE = "stg_snapshot"  # the source's state after the batch, one row per key
HAND = "dim_hand"  # the dimension the hand-written merge applies it to


def snapshot(initial: pa.Table, changes: pa.Table, key: str) -> pa.Table:
    """The source's state after ``changes``: each changed key's last event, every other
    key's row of ``initial``; with its commit time and position (when the state began)."""
    keys = changes.column(key).to_numpy()
    # the last event of each key: changes are in source order
    _, from_end = np.unique(keys[::-1], return_index=True)
    last = changes.take(pa.array(len(keys) - 1 - from_end))
    kept = initial.filter(pc.invert(pc.is_in(initial.column(key), value_set=last.column(key))))
    names = [n for n in initial.column_names if n not in ("_op", "_seq", "_toast_unchanged")]
    return pa.concat_tables([kept.select(names), last.select(names)])


def prepare(
    wh: Warehouse, dim: DimensionModel, columns: dict[str, exp.DataType], source: pa.Table
) -> None:
    """Untimed: the dimension as it was before the batch, copied, and the snapshot loaded
    (into a table of staging's shape; the CDC columns it has no value for stay NULL)."""
    wh.execute(f"drop table if exists {HAND}")
    wh.execute(f"create table {HAND} as select * from {dim.name}")
    wh.execute(f"drop table if exists {SOURCE}")
    wh.execute(staging_ddl(SOURCE.removeprefix("stg_"), columns, wh.dialect))
    wh.load_arrow(SOURCE, source)
    wh.execute("checkpoint")


def statements(dim: DimensionModel, values: list[str]) -> list[str]:
    """The full-compare merge: expire what changed, insert a version for each key left with
    no current row."""
    key = dim.keys[0]
    changed = " or ".join(f"d.{c} is distinct from s.{c}" for c in dim.tracked)
    update = (
        f"update {HAND} as d set expiry_date = s._commit_ts, is_current_record = false "
        f"from {SOURCE} as s where d.{key} = s.{key} and d.is_current_record and ({changed})"
    )
    columns = ", ".join(values)
    insert = (
        f"insert into {HAND} ({dim.surrogate}, {key}, {columns}, effective_date, expiry_date, "
        "is_current_record, is_deleted, is_inferred, _lsn, _seq) "
        f"select (select max({dim.surrogate}) from {HAND}) + row_number() over (), "
        f"s.{key}, {', '.join(f's.{c}' for c in values)}, s._commit_ts, "
        f"timestamptz '{FAR_FUTURE}', true, false, false, s._lsn, 0 from {SOURCE} as s "
        f"where not exists (select 1 from {HAND} as d "
        f"where d.{key} = s.{key} and d.is_current_record)"
    )
    return [update, insert]
