"""The SCD2 plan's path for the keys with one event in the batch: joins, no window.

Most keys a batch touches have exactly one event (a customer changes once between two loads).
For such a key the window steps of :mod:`riverbed.load.scd2_plan` (numbering, LAG, running
counts, FIRST_VALUE; each a sort of the batch and its current rows) reduce to a comparison of
the event with the key's current row, which a join gives. Measured on DuckDB (1M keys, 100,000
changed, 70% of them once): the windows over every key took most of the merge; the keys with
several events still go through them, the others through this.

Which keys: one event above the high-water mark, and no TOAST mark on it (a mark takes the
current row's value, which the full path resolves; marks are rare). Not with ``effective_from``
(business time): a version's start is then clamped to floors of the key's history, which
the full path places (``floors``/``timed``); there every key takes it.

The rows are exactly those step h of the full path gives for such a key (the design is in
:mod:`riverbed.load.scd2`'s docstring), in the same columns, without the surrogate key, which
the plan numbers over both paths together (new versions in source order):

============ ===================================================================================
event        rows
============ ===================================================================================
``close``    segment 0: the current row, expired at the delete, deleted
``noop``     none (a delete of a key with no current row)
``new``      segment 0 (if there is a current row): it, expired at the event; segment 1: the
             event's values from the event's time on, current
``complete`` segment 0: the inferred member's row filled with the event's values and position
``type1``    segment 0: the current row with the event's type1 values (start and position kept)
============ ===================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from riverbed.lake.schema import COMMIT_TS, POSITION_COLUMNS
from riverbed.load.model import FAR_FUTURE, DimensionModel
from riverbed.load.scd2_builders import (
    CLOSE,
    COMPLETE,
    NEW,
    NOOP,
    TYPE1,
    _col,
    _not_null,
    _one,
    _own,
    _table,
    _text,
    _timestamptz,
    _zero,
)

# the work table's columns after the values, in the order step h gives them (no surrogate)
VERSION_TAIL = (
    "effective_date",
    "expiry_date",
    "is_current_record",
    "is_deleted",
    "is_inferred",
    *POSITION_COLUMNS,
)


def counts(keys: Sequence[str]) -> exp.Select:
    """``counts``: per key of the batch, whether it takes the full path (``several``: more
    than one event, or one with a TOAST mark)."""
    marked = exp.NEQ(this=_col(_own("toast")), expression=_text(",,"))
    several = exp.or_(
        exp.GT(this=exp.Count(this=exp.Star()), expression=_one()),
        exp.Max(this=exp.Case(ifs=[exp.If(this=marked, true=_one())], default=_zero())).eq(_one()),
    )
    return (
        exp.select(*(_col(k) for k in keys), several.as_(_own("several"), quoted=True))
        .from_("events")
        .group_by(*(_col(k) for k in keys))
    )


def current(dim: DimensionModel) -> exp.Select:
    """``current``: the current rows of the keys in the batch, read once for both paths."""
    return (
        exp.select(exp.Star())
        .from_(_table(dim.name, "c"))
        .where(
            exp.and_(
                _col("is_current_record", "c"),
                exp.Exists(
                    this=exp.select(_one())
                    .from_(_table("events", "e"))
                    .where(exp.and_(*(_col(k, "e").eq(_col(k, "c")) for k in dim.keys)))
                ),
            )
        )
    )


def of_keys(keys: Sequence[str], *, several: bool) -> exp.Select:
    """``several`` (True) or ``lone`` (False): the events of the keys that take the full path,
    or the others."""
    flag = _col(_own("several"), "n")
    return (
        exp.select(_star("e"))
        .from_(_table("events", "e"))
        .join(
            _table("counts", "n"),
            on=exp.and_(*(_col(k, "n").eq(_col(k, "e")) for k in keys)),
            join_type="inner",
        )
        .where(flag if several else exp.Not(this=flag))
    )


def lone_classified(dim: DimensionModel, values: Sequence[str]) -> exp.Select:
    """``lone_classified``: each lone event beside its key's current row (the ``was_``
    columns, NULL without one) and its class."""
    keys = dim.keys
    live = _not_null(_col(keys[0], "c"))
    changed = exp.or_(
        *(exp.NullSafeNEQ(this=_col(n, "e"), expression=_col(n, "c")) for n in dim.tracked)
    )
    event_class = exp.Case(
        ifs=[
            exp.If(
                this=_col("_op", "e").eq(_text("D")),
                true=exp.Case(ifs=[exp.If(this=live, true=_text(CLOSE))], default=_text(NOOP)),
            ),
            exp.If(this=exp.Not(this=live.copy()), true=_text(NEW)),
            exp.If(this=_col("is_inferred", "c"), true=_text(COMPLETE)),
            exp.If(this=exp.paren(changed), true=_text(NEW)),
        ],
        default=_text(TYPE1),
    )
    was = [*values, "effective_date", *POSITION_COLUMNS, "is_inferred"]
    return (
        exp.select(
            *(_col(n, "e") for n in [*keys, *values, COMMIT_TS, *POSITION_COLUMNS]),
            *(_col(n, "c").as_(_was(n), quoted=True) for n in was),
            live.as_(_own("live"), quoted=True),
            event_class.as_(_own("class"), quoted=True),
        )
        .from_(_table("lone", "e"))
        .join(
            _table("current", "c"),
            on=exp.and_(*(_col(k, "c").eq(_col(k, "e")) for k in keys)),
            join_type="left",
        )
    )


def lone_versions(dim: DimensionModel, values: Sequence[str]) -> list[exp.Select]:
    """The rows of step h for the lone keys: segment 0 (a current row the event changes) and
    segment 1 (the version a ``new`` event starts), columns as step h's without the
    surrogate key."""
    klass = _col(_own("class"))

    def is_(*classes: str) -> exp.Expr:
        if len(classes) == 1:
            return klass.copy().eq(_text(classes[0]))
        return exp.In(this=klass.copy(), expressions=[_text(c) for c in classes])

    def pick(name: str, *classes: str) -> exp.Expr:
        """The event's ``name`` for ``classes``, else the current row's."""
        return exp.Case(
            ifs=[exp.If(this=is_(*classes), true=_col(name))], default=_col(_was(name))
        ).as_(name, quoted=True)

    closes_or_new = is_(CLOSE, NEW)
    segment0 = exp.select(
        *(_col(k) for k in dim.keys),
        *(pick(n, COMPLETE, TYPE1) if n in dim.type1 else pick(n, COMPLETE) for n in values),
        _zero().as_(_own("seg"), quoted=True),
        exp.Case(
            ifs=[exp.If(this=is_(COMPLETE), true=_col(COMMIT_TS))],
            default=_col(_was("effective_date")),
        ).as_("effective_date", quoted=True),
        exp.Case(
            ifs=[exp.If(this=closes_or_new, true=_col(COMMIT_TS))],
            default=_timestamptz(FAR_FUTURE),
        ).as_("expiry_date", quoted=True),
        is_(COMPLETE, TYPE1).as_("is_current_record", quoted=True),
        is_(CLOSE).as_("is_deleted", quoted=True),
        exp.Case(
            ifs=[exp.If(this=is_(COMPLETE), true=exp.false())],
            default=_col(_was("is_inferred")),
        ).as_("is_inferred", quoted=True),
        *(pick(n, COMPLETE) for n in POSITION_COLUMNS),
    ).from_("lone_classified")
    segment0 = segment0.where(_col(_own("live")))
    segment1 = (
        exp.select(
            *(_col(k) for k in dim.keys),
            *(_col(n) for n in values),
            _one().as_(_own("seg"), quoted=True),
            _col(COMMIT_TS).as_("effective_date", quoted=True),
            _timestamptz(FAR_FUTURE).as_("expiry_date", quoted=True),
            exp.true().as_("is_current_record", quoted=True),
            exp.false().as_("is_deleted", quoted=True),
            exp.false().as_("is_inferred", quoted=True),
            *(_col(n) for n in POSITION_COLUMNS),
        )
        .from_("lone_classified")
        .where(is_(NEW))
    )
    return [segment0, segment1]


def _was(name: str) -> str:
    """The current row's ``name`` beside a lone event."""
    return _own(f"was_{name}")


def _star(table: str) -> exp.Column:
    return exp.Column(this=exp.Star(), table=exp.to_identifier(table))
