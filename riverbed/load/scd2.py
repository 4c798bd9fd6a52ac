"""SCD Type 2 dimensions: apply one staged batch of source changes as versions, set-based.

The staging table ``stg_<source>`` holds one batch of change events: the source columns plus
``_op`` (I insert, U update, D delete carrying the key columns only, L snapshot row = insert),
``_commit_ts`` (source commit time), ``_lsn`` and ``_seq`` (together the source order, unique)
and ``_toast_unchanged`` (NULL, or ``col,col``: columns the source did not send, whose value is
the one the key had before). The dimension holds one row per version: ``<name>_key``
(surrogate), the natural key, every other source column, ``effective_date``, ``expiry_date``,
``is_current_record``, ``is_deleted``, ``is_inferred`` and the source position (``_lsn``,
``_seq``) of the event that started the version. A version is valid over
``[effective_date, expiry_date)``; the current one expires at FAR_FUTURE.

:func:`scd2_statements` returns the statements that apply the batch; run them, in order, in ONE
warehouse transaction. They are the same sqlglot expressions on DuckDB and PostgreSQL.

1. ``DROP TABLE IF EXISTS`` the work table (normally there is none: step 5 drops it, and a
   failed transaction takes it with it).

   Then a TRUNCATE in the batch (``_op`` T, no key) is rewritten in staging as a delete, at
   its position, of every key live then (see _truncates).

2. ``CREATE TEMPORARY TABLE _scd2_<dim> AS`` the batch's plan: one row per version the batch
   creates or changes. The query is a chain of CTEs over the batch; the dimension is read once,
   for the current rows of the keys in the batch. :mod:`riverbed.load.scd2_plan` builds it, one
   function per CTE, named as below.

   Most keys have one event in a batch; without ``effective_from``, those (with no TOAST mark)
   skip steps b-g: :mod:`riverbed.load.scd2_single` compares each with its current row by a
   join and gives the rows step h gives (``counts``, ``current``, ``lone``,
   ``lone_classified``); the steps below see only ``several``, the other keys' events.

   a. ``events``: staged rows above the dimension's high-water mark in the position table,
      ``(_lsn, _seq) > (hwm_lsn, hwm_seq)``. What is at or below it was applied by an earlier
      run, so rerunning a batch (or an older one) changes nothing.
   b. ``stream``: per key, its current dimension row as a pseudo-event ``current`` (values,
      effective_date as its time, position, is_inferred), followed by the key's events in
      source order; ``ord`` numbers them. With the state before the batch as the first row of
      each key, every rule below compares an event with simply the previous row (LAG).
   c. ``toast_keys`` / ``toast_groups`` / ``resolved`` (TOAST): a column listed in
      ``_toast_unchanged`` takes the value of the last earlier row of the key that sent it (an
      event, or the current row), else NULL. Per column, a running count of the rows that sent
      it groups a key's rows so that each group starts with a sending row; FIRST_VALUE over the
      group is the value. Only keys with a marked event go through these windows (usually
      none), and only variable-length columns: PostgreSQL never TOASTs fixed-width types.
   d. ``collapsed`` (``versions: per_transaction``, the default; left out for ``per_change``):
      of a key's events in one source transaction (one ``_lsn``; they share its commit time)
      the last by ``_seq``, which holds the state the transaction left (TOAST is resolved by
      now, so an unsent value still comes from a row this drops), and the last delete before
      it, so that a delete then an insert still closes the version before and starts a new
      one. So updated then deleted is a close, inserted then deleted a noop, several updates
      one version with the last values. The dropped rows were states no reader could see:
      every version they made would be zero-length (``[t, t)``). Which rows stay, ``stream``
      marks (``keep``) in the order it numbers them by.
   e. ``classified``: every event against the previous row of its key:

      ============ ============================================================================
      ``close``    a delete of a live key: ends the version, marked deleted
      ``noop``     a delete of a key with no live version (dropped from here on)
      ``new``      the key was not live (first insert, re-insert after a delete, an update of a
                   key never seen), or a tracked column IS DISTINCT FROM the previous row's
      ``complete`` the previous row is the current row and it is an inferred member: the event
                   fills that row in place (same surrogate key and effective_date)
      ``type1``    a live key and no tracked column changed: type1 columns overwrite the
                   version, nothing else changes
      ============ ============================================================================

      The previous row's tracked values are the state's: a ``type1`` event has the same ones,
      and after a delete nothing is compared.

      With ``effective_from`` (business time) two more steps follow. An event's time is then
      the column's value (the commit time where it is NULL, and always for a delete, which
      carries only its key). ``floors``: per key, the last version boundary before the batch
      (the current version's start, or the end of a version a delete closed). ``timed``: a
      ``new`` or ``close`` event places its boundary at the latest of its own time, the floor
      and the boundaries before it. Source order still decides the versions; business time
      only when each is valid. So a change later in source order whose time is earlier than
      (or equal to) the version it follows starts where that version started, which is left
      zero-length; the later change wins, validity stays gap-free and non-overlapping, and
      the current row is always the source's current row.
   f. ``segmented``: running counts per key, in ``ord`` order: ``seg`` counts ``new`` events, so
      segment 0 is the current row with what the batch does to it and each ``new`` event starts
      segment ``seg`` > 0, a version to insert; ``starter`` counts the rows whose values start a
      version's non-type1 columns (``current``, ``new``, ``complete``); ``carrier`` also counts
      ``type1`` events, which set the type1 columns. LEAD gives each event's successor.
   g. ``segments``: the values in force after each segment's last event: those of the row
      that starts its (key, starter) group for the non-type1 columns, the version's start and
      position; of the row that starts its (key, carrier) group for the type1 columns (a join
      with those rows).
   h. the versions: the last event of each segment (its successor is ``new``, or there is
      none). ``expiry_date`` = the close's time if the segment ends with a delete, else
      the next version's effective_date, else FAR_FUTURE; current = neither; deleted = closed.
      New versions (of both paths) get surrogate keys max(existing) + ROW_NUMBER() in source
      order (``versions``, then the work table's query).

3. ``MERGE INTO <dim> USING _scd2_<dim> ON natural key AND is_current_record AND seg = 0``:
   ``WHEN MATCHED`` updates the current row from before the batch (expiry, flags, type1 values,
   the values of a completed inferred member); ``WHEN NOT MATCHED AND seg > 0`` inserts the new
   versions. One join of the plan with the dimension. Where the dialect splits it
   (``Capabilities.split_merge``, PostgreSQL): an UPDATE of those current rows, then an INSERT
   of the new versions, to the same effect (_update_and_insert).

   Where an UPDATE of a variable-length column rewrites that column of its whole row group
   (DuckDB: ``wide_update_rewrites_row_group``) and a type1 column is variable-length, the
   rows that branch would give type1 values are deleted instead and inserted again: ``3a``
   copies them, as the update would leave them, into a second work table before the MERGE,
   ``3b`` inserts them after it (same surrogate key and start). Otherwise a long history's
   row groups were rewritten whole for one changed description (see Capabilities).

4. ``MERGE INTO _riverbed_scd2_positions`` raises the dimension's high-water mark to the last
   staged position, in the same transaction as the versions it covers.

5. ``DROP TABLE`` the work table.

Invariants after every run: at most one current row per key and none for a deleted key;
consecutive versions of a key meet (expiry = next effective) except across a delete (the
deleted version expires at the delete, the re-insert starts later). With ``per_change`` several
changes to one key in one transaction share a commit time, so all but the last of them are
versions of zero length (``[t, t)``), which never match an as-of lookup; either way a fact at
``t`` resolves to the state the transaction left, so the as-of lookup is the same in both.

A transaction the lake split over two staged loads (one larger than a transform batch) is
collapsed per load: the first part's last state stays a zero-length version.

Not resolved here: a TOAST mark on the new key of a key-changing update (captured as D of the
old key, then I of the new one) has no previous row of its key; the transform stage fills those
from the lake before staging.

Inferred members (:func:`inferred_members_statement`) are rows the fact loader creates for a key
a fact references before the dimension row arrived: natural key only, ``is_inferred``, valid
from INFERRED_SINCE. The key's first real event completes that row in place (``complete``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from riverbed.errors import ConfigError, first_line
from riverbed.lake.schema import CDC_COLUMNS, COMMIT_TS, EVENT_COLUMNS, POSITION_COLUMNS
from riverbed.load.model import BATCH_ID, FAR_FUTURE, STAGING_CDC_TYPES, DimensionModel
from riverbed.load.scd2_builders import (
    _PREFIX,
    _col,
    _is_null,
    _max_surrogate,
    _own,
    _table,
    _target,
    _text,
    _timestamptz,
    _window,
    _zero,
)
from riverbed.load.scd2_plan import POSITIONS, PlanInput, plan
from riverbed.load.warehouse import DIALECTS, capabilities

MERGE_DIALECTS = tuple(name for name, can in DIALECTS.items() if can.scd2_merge)
INFERRED_SINCE = "1900-01-01 00:00:00+00"  # effective_date of an inferred member
# the columns SCD2 adds to a dimension's source columns, by what they say of a version
VERSION_COLUMNS = (
    "effective_date",
    "expiry_date",
    "is_current_record",
    "is_deleted",
    "is_inferred",
)
SCD_COLUMNS = (*VERSION_COLUMNS, *POSITION_COLUMNS)
# what the MERGE writes over a current row: a version's start (effective_date) never changes
_REWRITTEN = tuple(name for name in SCD_COLUMNS if name != "effective_date")
# what the MERGE writes over a current row the batch only expires or closes
_ENDED = ("expiry_date", "is_current_record", "is_deleted")
_MERGE_TEXTS = 256  # scd2_sql's cache: dimensions x column sets x dialects a process keeps


# --- DDL -------------------------------------------------------------------------------------


def staging_ddl(
    dim_or_source_name: DimensionModel | str, columns: dict[str, exp.DataType], dialect: str
) -> exp.Create:
    """CREATE TABLE IF NOT EXISTS for the staging table of a source table (or of ``dim``):
    the source columns, then the CDC columns."""
    _check_dialect(dialect, merge=False)
    staging = (
        dim_or_source_name.staging
        if isinstance(dim_or_source_name, DimensionModel)
        else f"stg_{dim_or_source_name}"
    )
    cdc = STAGING_CDC_TYPES
    defs = [_column_def(name, kind) for name, kind in columns.items() if name not in cdc]
    defs += [_column_def(name, exp.DataType.build(kind)) for name, kind in cdc.items()]
    return _create_table(staging, defs)


def dimension_ddl(
    dim: DimensionModel,
    columns: dict[str, exp.DataType],
    dialect: str,
    *,
    indexes: bool = False,
) -> list[exp.Expr]:
    """CREATE TABLE IF NOT EXISTS for the dimension and the position table; with ``indexes``
    (a warehouse's ``has_indexes``) also a unique index on the surrogate key and one on
    (natural key, effective_date) for merges and as-of lookups."""
    _check(dim, columns)
    _check_dialect(dialect, merge=False)
    defs = [_column_def(dim.surrogate, exp.DataType.build("BIGINT"), not_null=True)]
    defs += [_column_def(key, columns[key], not_null=True) for key in dim.keys]
    defs += [_column_def(name, kind) for name, kind in columns.items() if name not in dim.keys]
    defs += [
        _column_def("effective_date", exp.DataType.build("TIMESTAMPTZ"), not_null=True),
        _column_def("expiry_date", exp.DataType.build("TIMESTAMPTZ"), not_null=True),
        _column_def("is_current_record", exp.DataType.build("BOOLEAN"), not_null=True),
        _column_def("is_deleted", exp.DataType.build("BOOLEAN"), not_null=True),
        _column_def("is_inferred", exp.DataType.build("BOOLEAN"), not_null=True),
        _column_def("_lsn", exp.DataType.build("BIGINT")),  # NULL for an inferred member
        _column_def("_seq", exp.DataType.build("BIGINT")),
    ]
    table = _create_table(dim.name, defs)
    fillfactor = capabilities(dialect).dimension_fillfactor
    if fillfactor is not None:  # room on each page for HOT updates (Capabilities)
        fill = exp.Property(this=exp.var("fillfactor"), value=exp.Literal.number(fillfactor))
        table.set("properties", exp.Properties(expressions=[fill]))
    statements: list[exp.Expr] = [table, positions_ddl()]
    if indexes:
        statements += [
            create_index(f"{dim.name}_surrogate", dim.name, [dim.surrogate], unique=True),
            create_index(f"{dim.name}_natural", dim.name, [*dim.keys, "effective_date"]),
        ]
    return statements


def positions_ddl() -> exp.Create:
    """CREATE TABLE IF NOT EXISTS for the high-water marks of all dimensions."""
    return _create_table(
        POSITIONS,
        [
            exp.ColumnDef(
                this=exp.to_identifier("dimension"),
                kind=exp.DataType.build("TEXT"),
                constraints=[exp.ColumnConstraint(kind=exp.PrimaryKeyColumnConstraint())],
            ),
            _column_def("_lsn", exp.DataType.build("BIGINT"), not_null=True),
            _column_def("_seq", exp.DataType.build("BIGINT"), not_null=True),
        ],
    )


# --- the merge -------------------------------------------------------------------------------


def scd2_statements(
    dim: DimensionModel, columns: dict[str, exp.DataType], dialect: str
) -> list[exp.Expr]:
    """The statements that apply the batch in ``dim.staging`` to ``dim.name``; run them in
    order in one transaction (see the module docstring for what each does). ``columns`` are
    the staged batch's non-CDC columns and their SQL types."""
    _check(dim, columns)
    _check_dialect(dialect)
    return _statements(PlanInput.of(dim, columns), dialect)


def scd2_sql(dim: DimensionModel, columns: dict[str, exp.DataType], dialect: str) -> list[str]:
    """scd2_statements as SQL text, built once per dimension, column set and dialect in a
    process: they read the batch from staging, so a run loop merges with the same text every
    run, and building and generating it cost 40 ms a dimension (measured), in Python, under
    the lock the dimensions merging in parallel share."""
    _check(dim, columns)
    _check_dialect(dialect)
    return list(_merge_text(PlanInput.of(dim, columns), dialect))


# scd2_sql's cache, owned by this module alone: nothing else reads or clears it. Its key is
# everything the text depends on: PlanInput (the dimension, its value columns in staged order
# and which of them are TOASTable) and the dialect. A column added, dropped or retyped so that
# the SQL changes is a new key, so no entry is ever stale; past the bound the least recently
# used entry goes (a column set seen long ago: a schema change, not this process's work).
@functools.lru_cache(maxsize=_MERGE_TEXTS)
def _merge_text(p: PlanInput, dialect: str) -> tuple[str, ...]:
    return tuple(statement.sql(dialect=dialect) for statement in _statements(p, dialect))


def _statements(p: PlanInput, dialect: str) -> list[exp.Expr]:
    """scd2_statements, of checked input, for ``dialect``: where it has
    wide_update_rewrites_row_group, the current rows whose variable-length type1 values the
    batch overwrites are deleted and inserted again, changed (step 3b); where it has
    split_merge, step 3 is an UPDATE then an INSERT, which update in place."""
    can = capabilities(dialect)
    work = f"{_PREFIX}{p.dim.name}"
    rewritten = f"{work}_rewritten"
    wide = (
        can.wide_update_rewrites_row_group
        and not can.split_merge
        and any(name in p.dim.type1 for name in p.toastable)
    )
    around: tuple[list[exp.Expr], list[exp.Expr]] = ([], [])
    if wide:
        around = (
            [_temporary(rewritten, _rewritten_rows(p, work))],
            [
                _insert_rewritten(p, rewritten),
                exp.Drop(tables=[exp.to_table(rewritten)], kind="TABLE"),
            ],
        )
    versions = (
        _update_and_insert(p, work)
        if can.split_merge
        else [_merge_versions(p, work, delete_in_place=wide)]
    )
    return [
        exp.Drop(tables=[exp.to_table(work)], kind="TABLE", exists=True),
        *([exp.Drop(tables=[exp.to_table(rewritten)], kind="TABLE", exists=True)] if wide else []),
        *_truncates(p.dim),
        _temporary(work, plan(p)),
        *around[0],
        *versions,
        *around[1],
        _merge_position(p.dim),
        exp.Drop(tables=[exp.to_table(work)], kind="TABLE"),
    ]


def _temporary(name: str, query: exp.Query) -> exp.Create:
    return exp.Create(
        this=exp.to_table(name),
        kind="TABLE",
        expression=query,
        properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
    )


def inferred_members_statement(
    dim: DimensionModel,
    fact_table: str,
    fact_column: str,
    dialect: str,
    where: exp.Expr | None = None,
) -> exp.Insert:
    """INSERT an inferred member into ``dim`` for every distinct non-NULL ``fact_column`` value
    of the rows of ``fact_table`` (those matching ``where``, columns qualified by ``f``) that
    has no row in the dimension at all (a deleted key keeps its history and gets none)."""
    _check_dialect(dialect)
    if len(dim.keys) != 1:
        raise ConfigError(
            [
                f"{dim.name}: inferred members need a single-column natural key, "
                f"not ({', '.join(dim.keys)})"
            ]
        )
    key = dim.keys[0]
    # an anti-join written as LEFT JOIN ... IS NULL: DuckDB plans NOT EXISTS with the whole
    # dimension as the hash table even when no fact row is missing its key (50 ms per 1M rows)
    referenced = (
        exp.select(_col(fact_column, "f").as_(key, quoted=True))
        .distinct()
        .from_(_table(fact_table, "f"))
        .join(
            _table(dim.name, "d"),
            on=_col(key, "d").eq(_col(fact_column, "f")),
            join_type="left",
        )
        .where(
            exp.and_(
                *([where] if where is not None else []),
                exp.Not(this=exp.Is(this=_col(fact_column, "f"), expression=exp.Null())),
                exp.Is(this=_col(key, "d"), expression=exp.Null()),
            )
        )
    )
    select = exp.select(
        exp.Add(
            this=_max_surrogate(dim),
            expression=_window(exp.RowNumber(), [], [_col(key, "r")]),
        ),
        _col(key, "r"),
        _timestamptz(INFERRED_SINCE),
        _timestamptz(FAR_FUTURE),
        exp.true(),
        exp.false(),
        exp.true(),
    ).from_(referenced.subquery("r"))
    target = [dim.surrogate, key, *VERSION_COLUMNS]
    return exp.Insert(this=_target(dim.name, target), expression=select)


def _truncates(dim: DimensionModel) -> list[exp.Expr]:
    """Step 1b: a TRUNCATE in the batch (``_op`` T, a row with no key) becomes what it did to
    the dimension: a delete, at its position, of every key live then, which the plan's rules
    close (or pass over, a key an earlier event of the batch deleted). Live then: the current
    rows' keys and the keys of the batch's events before it. Then the T rows go. A T row at
    or below the high-water mark makes deletes at or below it too, which step a drops.

    But not of a key a snapshot row (``_op`` L) after the T copies again: a T before a copy is
    what capture writes when a snapshot replaces one already loaded (``capture --resnapshot``,
    a table dropped and created again), and the copied row is then compared with the key's
    current version like any event: the same values keep the version, others start a new one.
    Only the keys the new copy lacks are closed (deleted at the source while no change of
    theirs could be captured), not every key closed and opened again."""
    keys = list(dim.keys)
    t, k = "t", "k"

    def position(table: str) -> tuple[exp.Column, exp.Column]:
        return _col("_lsn", table), _col("_seq", table)

    current = (
        exp.select(
            *(_col(name) for name in keys),
            exp.cast(exp.null(), "BIGINT").as_("_lsn", quoted=True),
            exp.cast(exp.null(), "BIGINT").as_("_seq", quoted=True),
        )
        .from_(exp.to_table(dim.name))
        .where(_col("is_current_record"))
    )
    events = (
        exp.select(*(_col(name) for name in [*keys, "_lsn", "_seq"]))
        .from_(exp.to_table(dim.staging))
        .where(exp.NEQ(this=_col("_op"), expression=_text("T")))
    )
    (t_lsn, t_seq), (k_lsn, k_seq) = position(t), position(k)
    before = exp.or_(
        _is_null(k_lsn),
        exp.LT(this=k_lsn.copy(), expression=t_lsn),
        exp.and_(k_lsn.copy().eq(t_lsn.copy()), exp.LT(this=k_seq, expression=t_seq)),
    )
    c = "c"
    (c_lsn, c_seq) = position(c)
    copied = (
        exp.select(exp.Literal.number(1))
        .from_(_table(dim.staging, c))
        .where(
            exp.and_(
                _col("_op", c).eq(_text("L")),
                *(_col(name, c).eq(_col(name, k)) for name in keys),
                exp.or_(
                    exp.GT(this=c_lsn, expression=t_lsn.copy()),
                    exp.and_(
                        c_lsn.copy().eq(t_lsn.copy()), exp.GT(this=c_seq, expression=t_seq.copy())
                    ),
                ),
            )
        )
    )
    deletes = (
        exp.select(
            *(_col(name, k) for name in keys),
            _text("D"),
            *(_col(name, t) for name in (COMMIT_TS, *POSITION_COLUMNS, BATCH_ID)),
        )
        .distinct()
        .from_(_table(dim.staging, t))
        .join(exp.union(current, events, distinct=False).subquery(k), on=before, join_type="inner")
        .where(_col("_op", t).eq(_text("T")))
        .where(exp.not_(exp.Exists(this=copied)))
    )
    target = _target(dim.staging, [*keys, *EVENT_COLUMNS, BATCH_ID])
    return [
        exp.Insert(this=target, expression=deletes),
        exp.delete(dim.staging, where=_col("_op").eq(_text("T"))),
    ]


# --- applying the plan (steps 3 and 4) -------------------------------------------------------


def _merge_versions(p: PlanInput, work: str, *, delete_in_place: bool = False) -> exp.Merge:
    """Step 3: update the current rows the batch changed, insert the new versions.

    A current row's values other than type1 change only when the batch completes it, an
    inferred member; every other current row gets its expiry, flags, position and type1
    values alone, and a row the batch only expires or closes (its type1 values, position and
    inferred flag as they were: most rows) its expiry and flags alone. Rewriting unchanged
    columns is most of an update's cost (DuckDB, measured: 100 rows of 11 columns 21 ms, of 3
    columns 5 ms). ``delete_in_place``: the rows that get type1 values are deleted instead;
    step 3b inserts them again, changed."""
    dim = p.dim
    updated = [*p.values, *_REWRITTEN]
    inserted = _version_columns(p)
    seg = _col(_own("seg"), "v")

    def update(names: Sequence[str]) -> exp.Update:
        return exp.Update(
            expressions=[exp.EQ(this=_col(n), expression=_col(n, "v")) for n in names]
        )

    in_place: exp.Expr = exp.var("DELETE") if delete_in_place else update(_in_place(p))
    return exp.Merge(
        this=_table(dim.name, "d"),
        using=_table(work, "v"),
        on=_current_of_segment0(dim),
        whens=exp.Whens(
            expressions=[
                exp.When(matched=True, condition=_col("is_inferred", "d"), then=update(updated)),
                exp.When(matched=True, condition=_ended(p), then=update(_ENDED)),
                exp.When(matched=True, then=in_place),
                exp.When(
                    matched=False,
                    condition=exp.GT(this=seg.copy(), expression=_zero()),
                    then=exp.Insert(
                        this=exp.Tuple(expressions=[_col(n) for n in inserted]),
                        expression=exp.Tuple(expressions=[_col(n, "v") for n in inserted]),
                    ),
                ),
            ]
        ),
    )


def _current_of_segment0(dim: DimensionModel) -> exp.Expr:
    """The MERGE's match: the dimension's current row (``d``) of a work table row (``v``)
    of segment 0, the state before the batch."""
    return exp.and_(
        *(_col(k, "d").eq(_col(k, "v")) for k in dim.keys),
        _col("is_current_record", "d"),
        _col(_own("seg"), "v").eq(_zero()),
    )


def _version_columns(p: PlanInput) -> list[str]:
    """A version's columns, as a new one is inserted: surrogate key, natural key, start,
    values, then the rest of the SCD columns."""
    return [p.dim.surrogate, *p.dim.keys, "effective_date", *p.values, *_REWRITTEN]


def _type1(p: PlanInput) -> list[str]:
    return [n for n in p.values if n in p.dim.type1]


def _in_place(p: PlanInput) -> list[str]:
    """What the MERGE sets on a current row that stays current, or ends with type1 values or
    a position of its own: the type1 values, expiry, flags and position."""
    return [*_type1(p), *_REWRITTEN]


def _kept(p: PlanInput) -> list[str]:
    """What a current row the batch only expires or closes keeps as it was (_ended)."""
    return [*_type1(p), *POSITION_COLUMNS, "is_inferred"]


def _ended(p: PlanInput) -> exp.Expr:
    """A matched current row the batch only expires or closes: its type1 values, position
    and inferred flag are the work table's."""
    return exp.and_(
        *(
            exp.Not(this=exp.NullSafeNEQ(this=_col(n, "d"), expression=_col(n, "v")))
            for n in _kept(p)
        )
    )


def _rewritten_rows(p: PlanInput, work: str) -> exp.Select:
    """Step 3a (``wide_update_rewrites_row_group``): the rows the MERGE's in-place branch
    would update, as that update would leave them: the current row (``d``) with the work
    table's (``v``) type1 values, expiry, flags and position. Read before the MERGE deletes
    them; step 3b inserts them again, with their surrogate keys and start."""
    dim = p.dim
    set_ = set(_in_place(p))
    return (
        exp.select(*(_col(n, "v" if n in set_ else "d") for n in _version_columns(p)))
        .from_(_table(dim.name, "d"))
        .join(_table(work, "v"), on=_current_of_segment0(dim), join_type="inner")
        .where(exp.and_(exp.Not(this=_col("is_inferred", "d")), exp.Not(this=_ended(p))))
    )


def _insert_rewritten(p: PlanInput, rewritten: str) -> exp.Insert:
    """Step 3b: the rows step 3a read, inserted again."""
    names = _version_columns(p)
    return exp.Insert(
        this=_target(p.dim.name, names),
        expression=exp.select(*(_col(n) for n in names)).from_(rewritten),
    )


def _update_and_insert(p: PlanInput, work: str) -> list[exp.Expr]:
    """Step 3 as an UPDATE, then an INSERT (Capabilities.split_merge), with _merge_versions'
    effect: the current rows of the plan's segment 0 take what its three WHEN MATCHED
    branches give them, a CASE per column here (PostgreSQL writes a whole new row version for
    any update, so a column set to its own value costs nothing more); then the new versions
    go in. In this order: the UPDATE would otherwise match the new current rows too."""
    dim = p.dim
    kept = _kept(p)
    inferred = _col("is_inferred", "d")
    ended = _ended(p)

    def value(name: str) -> exp.Expr:
        if name in _ENDED:  # every branch sets them
            return _col(name, "v")
        # the inferred branch sets all; the in-place branch type1 and the rest of _REWRITTEN,
        # the ended branch none (they are equal to the plan's there, but for a numeric's scale)
        takes = inferred.copy() if name not in kept else exp.or_(inferred.copy(), exp.not_(ended))
        return exp.Case(ifs=[exp.If(this=takes, true=_col(name, "v"))], default=_col(name, "d"))

    updated = [*p.values, *_REWRITTEN]
    seg = _col(_own("seg"), "v")
    update = exp.Update(
        this=_table(dim.name, "d"),
        expressions=[exp.EQ(this=_col(n), expression=value(n)) for n in updated],
        from_=exp.From(this=_table(work, "v")),
        where=exp.Where(this=_current_of_segment0(dim)),
    )
    inserted = _version_columns(p)
    insert = exp.Insert(
        this=_target(dim.name, inserted),
        expression=exp.select(*(_col(n, "v") for n in inserted))
        .from_(_table(work, "v"))
        .where(exp.GT(this=seg.copy(), expression=_zero())),
    )
    return [update, insert]


def _merge_position(dim: DimensionModel) -> exp.Merge:
    """Step 4: raise the dimension's high-water mark to the last staged event (never lower)."""
    last = (
        exp.select(_text(dim.name).as_("dimension"), _col("_lsn"), _col("_seq"))
        .from_(dim.staging)
        .order_by(
            exp.Ordered(this=_col("_lsn"), desc=True), exp.Ordered(this=_col("_seq"), desc=True)
        )
        .limit(1)
    )
    s_lsn, p_lsn = _col("_lsn", "s"), _col("_lsn", "p")
    later = exp.or_(
        exp.GT(this=s_lsn, expression=p_lsn),
        exp.and_(
            s_lsn.copy().eq(p_lsn.copy()),
            exp.GT(this=_col("_seq", "s"), expression=_col("_seq", "p")),
        ),
    )
    names = ["dimension", *POSITION_COLUMNS]
    return exp.Merge(
        this=_table(POSITIONS, "p"),
        using=last.subquery("s"),
        on=_col("dimension", "p").eq(_col("dimension", "s")),
        whens=exp.Whens(
            expressions=[
                exp.When(
                    matched=True,
                    condition=exp.paren(later),
                    then=exp.Update(
                        expressions=[
                            exp.EQ(this=_col(n), expression=_col(n, "s")) for n in POSITION_COLUMNS
                        ]
                    ),
                ),
                exp.When(
                    matched=False,
                    then=exp.Insert(
                        this=exp.Tuple(expressions=[_col(n) for n in names]),
                        expression=exp.Tuple(expressions=[_col(n, "s") for n in names]),
                    ),
                ),
            ]
        ),
    )


def position_query(dim: DimensionModel) -> exp.Select:
    """The dimension's high-water mark (``_lsn``, ``_seq``): no row before its first merge."""
    return (
        exp.select(_col("_lsn"), _col("_seq"))
        .from_(POSITIONS)
        .where(_col("dimension").eq(_text(dim.name)))
    )


def late_versions_query(dim: DimensionModel, since: tuple[int, int] | None) -> exp.Select:
    """With ``effective_from``: how many versions started by events after ``since`` (the
    high-water mark before the merge) begin later than their own business time, moved up to
    the boundary before them (scd2_plan.timed). A few are back-dated corrections; many mean
    the application does not set the column on every change."""
    assert dim.effective_from is not None
    business = exp.cast(_col(dim.effective_from), exp.DataType.build("TIMESTAMPTZ"))
    late = exp.and_(
        exp.GT(this=_col("effective_date"), expression=business),
        exp.Not(this=_col("is_inferred")),
    )
    if since is not None:
        lsn, seq = (exp.Literal.number(n) for n in since)
        late = exp.and_(
            late,
            exp.or_(
                exp.GT(this=_col("_lsn"), expression=lsn),
                exp.and_(_col("_lsn").eq(lsn.copy()), exp.GT(this=_col("_seq"), expression=seq)),
            ),
        )
    return exp.select(exp.Count(this=exp.Star()).as_("n")).from_(dim.name).where(late)


# --- checks and DDL builders -----------------------------------------------------------------


def _check(dim: DimensionModel, columns: dict[str, exp.DataType]) -> None:
    """Config and staged batch must agree; one line per problem, naming the fix."""
    where = f"tables.{dim.source}"
    problems = []
    for setting, names in (("keys", dim.keys), ("tracked", dim.tracked), ("type1", dim.type1)):
        missing = [n for n in names if n not in columns]
        if missing:
            problems.append(
                f"{where}.{setting}: {', '.join(missing)} not in the staged columns of "
                f"{dim.source} ({', '.join(columns)}); fix the name or the transforms"
            )
    in_keys = [n for n in (*dim.tracked, *dim.type1) if n in dim.keys]
    if in_keys:
        problems.append(
            f"{where}: key column {', '.join(in_keys)} cannot be tracked or type1; "
            "a natural key never changes within a version"
        )
    reserved = [
        n
        for n in columns
        if n in SCD_COLUMNS or n in CDC_COLUMNS or n == dim.surrogate or n.startswith(_PREFIX)
    ]
    if reserved:
        problems.append(
            f"{where}: column {', '.join(reserved)} clashes with a column {dim.name} adds "
            f"({dim.surrogate}, {', '.join(SCD_COLUMNS)}, or a name starting with {_PREFIX}); "
            "rename it in transforms"
        )
    if problems:
        raise ConfigError(problems)


def _check_dialect(dialect: str, *, merge: bool = True) -> None:
    """DDL is plain and generates for any dialect sqlglot knows (e.g. redshift for
    ``riverbed ddl``); the merge relies on MERGE semantics checked on DuckDB and PostgreSQL."""
    try:
        Dialect.get_or_raise(dialect)
    except ValueError as exc:  # "Unknown dialect 'x'. Did you mean ...?"
        raise ConfigError([f"warehouse.engine: {first_line(exc)}"]) from exc
    if merge and not capabilities(dialect).scd2_merge:
        raise ConfigError(
            [
                f"warehouse.engine: the SCD2 merge runs on {' and '.join(MERGE_DIALECTS)} "
                f"warehouses, not {dialect}; set warehouse.engine to one of them"
            ]
        )


def _column_def(name: str, kind: exp.DataType, *, not_null: bool = False) -> exp.ColumnDef:
    constraints = [exp.ColumnConstraint(kind=exp.NotNullColumnConstraint())] if not_null else []
    return exp.ColumnDef(
        this=exp.to_identifier(name, quoted=True), kind=kind, constraints=constraints
    )


def _create_table(name: str, defs: list[exp.ColumnDef]) -> exp.Create:
    return exp.Create(
        this=exp.Schema(this=exp.to_table(name), expressions=defs), kind="TABLE", exists=True
    )


def create_index(name: str, table: str, names: list[str], *, unique: bool = False) -> exp.Create:
    """CREATE [UNIQUE] INDEX IF NOT EXISTS ``name`` ON ``table`` (``names``)."""
    return exp.Create(
        this=exp.Index(
            this=exp.to_identifier(name),
            table=exp.to_table(table),
            params=exp.IndexParameters(columns=[exp.Ordered(this=_col(n)) for n in names]),
        ),
        kind="INDEX",
        exists=True,
        unique=unique,
    )
