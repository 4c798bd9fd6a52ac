"""Facts that read like the source: a current-state view per fact table, and the changes an
append leaves out because they would say nothing.

The fact table is the history: one row per source change, flagged ``_op``. Summing it counts an
updated order once per version and a deleted one still, so each fact gets a view
(``<target>_current``, or ``current_view:`` in the table's config) with one row per live source
key: the key's latest row by source position (``_lsn``, ``_seq``), its values and dimension
keys as of that change, without ``_op``. A key is live when its latest change is an I, U or L
and no TRUNCATE (a T row, which names no key) came after it: the view ranks only the rows after
the last T. A withdrawn batch (``run --reprocess``) is deleted from the table and its
replacement appended, so the view, computed from the table, is right again without any step of
its own. The ranking is a window over the key ordered by position; PostgreSQL gets an index in
that order (``<fact>_current_idx``) and one of the few T rows (see current_indexes).

Two kinds of change carry nothing for the view and would only inflate the history, so the
append leaves them out (and the load report counts them):

* an update whose source columns all equal the key's previous values (NULL equal to NULL): the
  previous row is the key's one before it in the batch, else its row in the view;
* a delete of a key not live before it: its insert was quarantined, it predates the snapshot,
  or it was deleted already.

"Previous" never reaches back across a TRUNCATE: after one, a key's first update is kept and its
delete is one without a key. Both rules compare each staged change with its predecessor among
the batch's changes and the view's rows of the keys the batch names, in position order (see
dropped_changes), evaluated in the append's transaction after its preaction, so a rerun of a
batch compares against what came before it, not against itself.

The statements are SQL templates over quoted identifiers, parsed once by sqlglot in DuckDB's
dialect and generated for each warehouse's: the window and set logic read better as SQL than
as builder calls, and both engines run the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from riverbed.lake.schema import OP, POSITION_COLUMNS
from riverbed.load.model import FactModel
from riverbed.load.scd2 import create_index

LIVE_OPS = "('I', 'U', 'L')"  # a change that leaves the key with values


@dataclass(frozen=True)
class LeftOut:
    """The staged changes an append left out (the load report's counts per fact table)."""

    unchanged_updates: int = 0  # updates whose source columns equal the key's previous values
    deletes_without_key: int = 0  # deletes of a key not live: never loaded, or deleted already

    def as_dict(self) -> dict[str, int]:
        return {
            "unchanged_updates": self.unchanged_updates,
            "deletes_without_key": self.deletes_without_key,
        }


def current_view_ddl(fact: FactModel, table_columns: Sequence[str]) -> exp.Create:
    """CREATE OR REPLACE VIEW of ``fact``'s current state over the fact table's
    ``table_columns`` (in table order: a column the table gains later comes last in both, so
    PostgreSQL replaces the view in place; a widened column needs the view dropped first,
    drop_current_view)."""
    names = [c for c in table_columns if c != OP]
    body = current_rows(fact, names)
    create = sqlglot.parse_one(f"CREATE OR REPLACE VIEW {_q(fact.view)} AS SELECT 1", read="duckdb")
    assert isinstance(create, exp.Create)
    create.set("expression", body)
    return create


def drop_current_view(fact: FactModel) -> exp.Drop:
    """DROP VIEW IF EXISTS: before a column of the fact table changes type, which PostgreSQL
    refuses while a view reads it."""
    return exp.Drop(tables=[exp.to_table(fact.view)], kind="VIEW", exists=True)


def current_rows(
    fact: FactModel,
    names: Sequence[str],
    *,
    keys_in: str | None = None,
    keys_from: str | None = None,
) -> exp.Select:
    """The latest row of each live key of ``fact``, its columns ``names``; with ``keys_in``,
    only the keys that table (staging) names, which the planner can look up by key rather than
    rank the whole table; with ``keys_from`` (a SELECT of the key columns, DuckDB's dialect),
    only the keys it returns (an extract's refresh of a few days ranks those days' keys)."""
    keys = ", ".join(f"f.{_q(k)}" for k in fact.keys)
    order = ", ".join(f"f.{_q(c)} DESC" for c in POSITION_COLUMNS)
    lsn, seq = (_q(c) for c in POSITION_COLUMNS)
    # the truncate is checked on each key's latest row, after the window: its input stays the
    # table in the index's order, which PostgreSQL then reads without a sort (measured: the
    # filter before the window had it sort a million rows on disk)
    after_truncate = (
        f"(t.t_lsn IS NULL OR latest.{lsn} > t.t_lsn"
        f" OR (latest.{lsn} = t.t_lsn AND latest.{seq} > t.t_seq))"
    )
    only_keys = ""
    if keys_in is not None:
        same = " AND ".join(f"k.{_q(c)} = f.{_q(c)}" for c in fact.keys)
        only_keys = f" WHERE EXISTS (SELECT 1 FROM {_q(keys_in)} AS k WHERE {same})"
    elif keys_from is not None:
        only_keys = f" WHERE ({keys}) IN ({keys_from})"
    inner = ", ".join(f"f.{_q(c)}" for c in dict.fromkeys([*names, OP, *POSITION_COLUMNS]))
    text = (
        f"SELECT {', '.join(f'latest.{_q(c)}' for c in names)} FROM ("
        f" SELECT {inner}, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}) AS _rank"
        f" FROM {_q(fact.name)} AS f{only_keys}"
        f") AS latest"
        f" LEFT JOIN (SELECT {lsn} AS t_lsn, {seq} AS t_seq FROM {_q(fact.name)}"
        f" WHERE {_q(OP)} = 'T' ORDER BY {lsn} DESC, {seq} DESC LIMIT 1) AS t ON TRUE"
        f" WHERE latest._rank = 1 AND latest.{_q(OP)} IN {LIVE_OPS} AND {after_truncate}"
    )
    return _select(text)


def current_indexes(fact: FactModel) -> list[exp.Create]:
    """For an engine with indexes (PostgreSQL): the view's order, key then position newest
    first, which serves its window without a sort and the append's look-up of the keys a batch
    names; and the T rows by position (a partial index: truncates are few), which finds the
    last one without reading the table."""
    by_key = create_index(f"{fact.name}_current_idx", fact.name, [*fact.keys, *POSITION_COLUMNS])
    for ordered in by_key.this.args["params"].args["columns"][len(fact.keys) :]:
        ordered.set("desc", True)
    truncates = create_index(f"{fact.name}_truncates_idx", fact.name, list(POSITION_COLUMNS))
    for ordered in truncates.this.args["params"].args["columns"]:
        ordered.set("desc", True)
    truncates.this.args["params"].set(
        "where", exp.Where(this=exp.column(OP, quoted=True).eq(exp.Literal.string("T")))
    )
    return [by_key, truncates]


def dropped_changes(fact: FactModel, columns: Sequence[str]) -> exp.Select:
    """The positions (and ``_op``) of the changes in ``fact``'s staging table the append leaves
    out (see the module docstring): compared over ``columns``, the staged source columns.

    Each staged change meets its predecessor of the same key by LAG over the union of the
    staged changes and the view's rows of their keys, in position order; ``_epoch`` counts the
    staged truncates up to each row, and a predecessor of another epoch is no predecessor."""
    keys = [_q(k) for k in fact.keys]
    values = [_q(c) for c in columns if c not in fact.keys]
    lsn, seq, op = (_q(c) for c in (*POSITION_COLUMNS, OP))
    carried = ", ".join([*keys, *values])
    prior = current_rows(
        fact,
        [*fact.keys, *(c for c in columns if c not in fact.keys), *POSITION_COLUMNS],
        keys_in=fact.staging,
    )
    lags = "".join(f", LAG({v}) OVER w AS _p{i}" for i, v in enumerate(values))
    # qualified: a name the subquery lacked would bind to the insert's staged row instead
    same = "".join(
        f" AND compared.{v} IS NOT DISTINCT FROM compared._p{i}" for i, v in enumerate(values)
    )
    text = (
        f"SELECT {lsn}, {seq}, {op} FROM ("
        f" SELECT {lsn}, {seq}, {op}, {', '.join(values) or 'NULL AS _none'}, _staged, _epoch,"
        f" LAG({op}) OVER w AS _prev_op,"
        f" LAG(_epoch) OVER w AS _prev_epoch{lags}"
        f" FROM ("
        f"  SELECT u.*, SUM(CASE WHEN {op} = 'T' THEN 1 ELSE 0 END) OVER (ORDER BY {lsn}, {seq}"
        f"  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _epoch"
        f"  FROM (SELECT {carried}, {op}, {lsn}, {seq}, 1 AS _staged FROM {_q(fact.staging)}"
        f"  UNION ALL SELECT {carried}, 'U' AS {op}, {lsn}, {seq}, 0 AS _staged"
        f"  FROM (SELECT 1) AS prior_rows) AS u"
        f" ) AS changes WHERE {op} <> 'T'"
        f" WINDOW w AS (PARTITION BY {', '.join(keys)} ORDER BY {lsn}, {seq})"
        f") AS compared WHERE _staged = 1 AND ("
        f"({op} = 'U' AND _prev_op IN {LIVE_OPS} AND _prev_epoch = _epoch{same})"
        f" OR ({op} = 'D' AND (_prev_op IS NULL OR _prev_op = 'D' OR _prev_epoch <> _epoch)))"
    )
    select = _select(text)
    _fill(select, "prior_rows", prior)
    return select


def staged_changes_query(fact: FactModel) -> exp.Select:
    """One row: how many updates and deletes ``fact``'s staging holds (``u``, ``d``); none,
    and the append has nothing to leave out."""
    return _select(
        f"SELECT COALESCE(SUM(CASE WHEN {_q(OP)} = 'U' THEN 1 ELSE 0 END), 0) AS u,"
        f" COALESCE(SUM(CASE WHEN {_q(OP)} = 'D' THEN 1 ELSE 0 END), 0) AS d"
        f" FROM {_q(fact.staging)}"
    )


def appended_changes_query(fact: FactModel, batch_ids: Sequence[str]) -> exp.Select:
    """staged_changes_query of the rows of ``batch_ids`` the fact table holds: what the
    append kept, so the staged counts minus these are what it left out."""
    select = _select(
        f"SELECT COALESCE(SUM(CASE WHEN {_q(OP)} = 'U' THEN 1 ELSE 0 END), 0) AS u,"
        f" COALESCE(SUM(CASE WHEN {_q(OP)} = 'D' THEN 1 ELSE 0 END), 0) AS d"
        f" FROM {_q(fact.name)}"
    )
    return select.where(
        exp.column("batch_id").isin(*(exp.Literal.string(b) for b in batch_ids)), copy=False
    )


def left_out(fact: FactModel, columns: Sequence[str], staged_alias: str) -> exp.Expr:
    """The append's filter: the staged row (as ``staged_alias``) is not one dropped_changes
    names."""
    same = " AND ".join(f"x.{_q(c)} = {staged_alias}.{_q(c)}" for c in POSITION_COLUMNS)
    check = _select(f"SELECT 1 FROM (SELECT 1) AS x WHERE {same}")
    _fill(check, "x", dropped_changes(fact, columns))
    return exp.Not(this=exp.Exists(this=check))


def _fill(select: exp.Select, alias: str, body: exp.Select) -> None:
    """Put ``body`` in place of the placeholder subquery ``(SELECT 1) AS alias``: a built
    statement goes in as a tree, never spliced in as text."""
    placeholder = next(s for s in select.find_all(exp.Subquery) if s.alias == alias)
    placeholder.set("this", body)


def _select(text: str) -> exp.Select:
    select = sqlglot.parse_one(text, read="duckdb")
    assert isinstance(select, exp.Select)
    return select


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")
