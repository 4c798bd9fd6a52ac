"""Row rules: each compiles to a ``RowCheck``, the condition a row fails (NULL passes) and the
reason shown, plus any lookup it LEFT JOINs to the batch.

``not_null`` and the simple rules on one value (``accepted_values``, ``not_accepted_values``,
``range``, ``not_equal``, ``length``, ``regex``, ``valid_date``, ``not_in_future``) read the row
alone; the simple ones never fail a NULL. ``unique`` and ``references`` join grouped or DISTINCT
subqueries, which never multiply the batch's rows; ``unique`` compares keys, not rows (see the
package's docstring). ``sql_row`` and ``expression`` are compiled by ``custom``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from riverbed.config.tables import QualityRule
from riverbed.transform.rules.context import RowCheck, RuleContext, RuleTarget
from riverbed.transform.rules.custom import sql_row
from riverbed.transform.rules.sql import (
    BATCH,
    as_text,
    col,
    concat,
    live,
    number_literal,
    number_text,
    relation,
    timestamp_literal,
)


def row_check(target: RuleTarget, rule: QualityRule, index: int) -> RowCheck:
    if rule.type in ("sql_row", "expression"):
        return sql_row(target, rule, index)
    assert rule.column is not None  # RULE_REQUIRES: every other row rule has a column
    value = col(rule.column)
    name = rule.column
    if rule.type == "not_null":
        return RowCheck(value.is_(exp.null()), exp.Literal.string(f"{name} is null"), [])
    if rule.type == "unique":
        return _unique(target, rule.column, index)
    if rule.type == "references":
        return _references(target, rule, index)
    builder = _SIMPLE_ROW_RULES[rule.type]
    fails, reason = builder(rule, value, target.ctx)
    return RowCheck(exp.and_(value.is_(exp.null()).not_(), fails), reason, [])


def _unique(target: RuleTarget, column: str, index: int) -> RowCheck:
    keys = target.ctx.keys
    # Per value: the smallest and largest of each key column among this batch's rows. A
    # row's value is shared with another key iff some key column's min or max differs
    # from the row's own, which holds for composite keys without concatenating them.
    alias = f"_j{index}"
    grouped = (
        exp.select(
            col(column).as_("_value"),
            *(exp.func("MIN", col(k)).as_(f"_lo{i}") for i, k in enumerate(keys)),
            *(exp.func("MAX", col(k)).as_(f"_hi{i}") for i, k in enumerate(keys)),
        )
        .from_(relation(target.batch, BATCH))
        .where(exp.and_(live(), col(column).is_(exp.null()).not_()))
        .group_by(col(column))
    )
    in_batch = exp.or_(
        *(
            exp.or_(col(k).neq(col(f"_lo{i}", alias)), col(k).neq(col(f"_hi{i}", alias)))
            for i, k in enumerate(keys)
        )
    )
    joins: list[tuple[exp.Expr, exp.Expr]] = [
        (grouped.subquery(alias), col(column).eq(col("_value", alias)))
    ]
    shown = concat(f"{column} '", as_text(col(column)), "'")
    reason_batch = concat(shown.copy(), " is also used by another key in this batch")
    if target.ctx.current is None:
        return RowCheck(in_batch, reason_batch, joins)
    current_alias = f"_c{index}"
    touched = "_t"
    batch_keys = (
        exp.select(*(col(k) for k in keys), exp.alias_(exp.true(), "_hit"))
        .distinct()
        .from_(relation(target.batch, BATCH))
    )
    held = (
        exp.select(col(column, "c").as_("_value"), exp.alias_(exp.true(), "_hit"))
        .distinct()
        .from_(relation(target.ctx.current, "c"))
        .join(
            batch_keys.subquery(touched),
            on=exp.and_(*(col(k, "c").eq(col(k, touched)) for k in keys)),
            join_type="left",
        )
        .where(
            exp.and_(
                col("_hit", touched).is_(exp.null()),
                col(column, "c").is_(exp.null()).not_(),
            )
        )
    )
    joins.append((held.subquery(current_alias), col(column).eq(col("_value", current_alias))))
    in_current = col("_hit", current_alias).is_(exp.null()).not_()
    reason = exp.Case(
        ifs=[exp.If(this=in_batch.copy(), true=reason_batch)],
        default=concat(shown.copy(), " is already used by another key"),
    )
    return RowCheck(exp.or_(in_batch, in_current), reason, joins)


def _references(target: RuleTarget, rule: QualityRule, index: int) -> RowCheck:
    assert rule.column is not None and rule.reference is not None
    table, column = rule.reference.split(".")
    alias = f"_j{index}"
    source: exp.Expr
    if table == target.ctx.table:
        # A self-reference (e.g. manager_id -> employees.employee_id) may point at a row
        # that arrives in this very batch.
        arriving: exp.Query = (
            exp.select(col(column, "r").as_(column))
            .from_(relation(target.batch, "r"))
            .where(live("r"))
        )
        if target.ctx.current is not None:
            held = exp.select(col(column, "c")).from_(relation(target.ctx.current, "c"))
            arriving = exp.union(arriving, held, distinct=False)
        source = arriving.subquery("r")
    else:
        source = relation(target.relation_of(rule, table), "r")
    values = (
        exp.select(col(column, "r").as_("_value"), exp.alias_(exp.true(), "_hit"))
        .distinct()
        .from_(source)
        .where(col(column, "r").is_(exp.null()).not_())
    )
    fails = exp.and_(col(rule.column).is_(exp.null()).not_(), col("_hit", alias).is_(exp.null()))
    reason = concat(f"{rule.column} ", as_text(col(rule.column)), f" not found in {rule.reference}")
    return RowCheck(
        fails, reason, [(values.subquery(alias), col(rule.column).eq(col("_value", alias)))]
    )


# --- simple row rules: (rule, value, ctx) -> (fails, reason), value already known non-null ----

_Builder = Callable[[QualityRule, exp.Column, RuleContext], tuple[exp.Expr, exp.Expr]]


def _accepted_values(
    rule: QualityRule, value: exp.Column, _ctx: RuleContext
) -> tuple[exp.Expr, exp.Expr]:
    # A NULL among the values would make NOT IN unknown for every row; nulls pass anyway.
    accepted = [v for v in rule.values or [] if v is not None]
    fails: exp.Expr = (
        exp.In(this=value, expressions=[exp.convert(v) for v in accepted]).not_()
        if accepted
        else exp.true()
    )
    reason = concat(
        f"{rule.column} '", as_text(value.copy()), f"' not in accepted values ({_listed(accepted)})"
    )
    return fails, reason


def _not_accepted_values(
    rule: QualityRule, value: exp.Column, _ctx: RuleContext
) -> tuple[exp.Expr, exp.Expr]:
    refused = rule.values or []  # at least one, and no NULL: checked at load
    fails = exp.In(this=value, expressions=[exp.convert(v) for v in refused])
    reason = concat(
        f"{rule.column} '",
        as_text(value.copy()),
        f"' is one of the values not accepted ({_listed(refused)})",
    )
    return fails, reason


def _listed(values: list[object]) -> str:
    """The first five of ``values``, as a rule's failure reason names them."""
    return ", ".join(str(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")


def _not_equal(
    rule: QualityRule, value: exp.Column, _ctx: RuleContext
) -> tuple[exp.Expr, exp.Expr]:
    reason = concat(f"{rule.column} = ", as_text(value.copy()), f" must not equal {rule.value}")
    return value.copy().eq(exp.convert(rule.value)), reason


def _range(rule: QualityRule, value: exp.Column, _ctx: RuleContext) -> tuple[exp.Expr, exp.Expr]:
    shown = concat(f"{rule.column} = ", as_text(value.copy()))
    below = " is at or below exclusive min " if rule.exclusive_min else " is below min "
    above = " is at or above exclusive max " if rule.exclusive_max else " is above max "
    return _bounds(rule, value, shown, below, above)


def _length(rule: QualityRule, value: exp.Column, _ctx: RuleContext) -> tuple[exp.Expr, exp.Expr]:
    length = exp.Length(this=as_text(value))
    shown = concat(
        f"{rule.column} '", as_text(value.copy()), "' has length ", as_text(length.copy())
    )
    if rule.min is None and rule.max is None:
        return exp.false(), shown
    return _bounds(rule, length, shown, ", below min ", ", above max ")


def _bounds(
    rule: QualityRule, measure: exp.Expr, shown: exp.Expr, below: str, above: str
) -> tuple[exp.Expr, exp.Expr]:
    """Inclusive bounds, unless the rule makes one exclusive: a measure equal to min or max
    passes, or with ``exclusive_min`` / ``exclusive_max`` fails."""
    checks: list[tuple[exp.Expr, str]] = []
    if rule.min is not None:
        low = number_literal(rule.min)
        failing: exp.Expr = measure.copy() <= low if rule.exclusive_min else measure.copy() < low
        checks.append((failing, below + number_text(rule.min)))
    if rule.max is not None:
        high = number_literal(rule.max)
        failing = measure.copy() >= high if rule.exclusive_max else measure.copy() > high
        checks.append((failing, above + number_text(rule.max)))
    fails = exp.or_(*(condition for condition, _ in checks))
    reason = exp.Case(
        ifs=[exp.If(this=c.copy(), true=concat(shown.copy(), text)) for c, text in checks]
    )
    return fails, reason


def _regex(rule: QualityRule, value: exp.Column, _ctx: RuleContext) -> tuple[exp.Expr, exp.Expr]:
    assert rule.pattern is not None
    matches = exp.RegexpLike(this=as_text(value), expression=exp.Literal.string(rule.pattern))
    reason = concat(
        f"{rule.column} '", as_text(value.copy()), f"' does not match pattern '{rule.pattern}'"
    )
    return matches.not_(), reason


def _valid_date(
    rule: QualityRule, value: exp.Column, _ctx: RuleContext
) -> tuple[exp.Expr, exp.Expr]:
    """min and max of a valid_date rule are years, inclusive: min 1900 accepts 1900-01-01."""
    as_date = exp.TryCast(this=value, to=exp.DataType.build("DATE"), safe=True)
    checks: list[tuple[exp.Expr, exp.Expr]] = [
        (
            as_date.is_(exp.null()),
            concat(f"{rule.column} '", as_text(value.copy()), "' is not a valid date"),
        )
    ]
    year = exp.Year(this=as_date.copy())
    if rule.min is not None:
        checks.append(
            (
                year < number_literal(rule.min),
                concat(
                    f"{rule.column} ",
                    as_text(as_date.copy()),
                    f" is before year {number_text(rule.min)}",
                ),
            )
        )
    if rule.max is not None:
        checks.append(
            (
                year.copy() > number_literal(rule.max),
                concat(
                    f"{rule.column} ",
                    as_text(as_date.copy()),
                    f" is after year {number_text(rule.max)}",
                ),
            )
        )
    fails = exp.or_(*(c for c, _ in checks))
    reason = exp.Case(ifs=[exp.If(this=c.copy(), true=text) for c, text in checks])
    return fails, reason


def _not_in_future(
    rule: QualityRule, value: exp.Column, ctx: RuleContext
) -> tuple[exp.Expr, exp.Expr]:
    # no "now" in the reason: a retry of the batch must write the same bytes
    reason = concat(f"{rule.column} ", as_text(value.copy()), " is in the future")
    return value > timestamp_literal(ctx.now), reason


_SIMPLE_ROW_RULES: dict[str, _Builder] = {
    "accepted_values": _accepted_values,
    "not_accepted_values": _not_accepted_values,
    "range": _range,
    "not_equal": _not_equal,
    "length": _length,
    "regex": _regex,
    "valid_date": _valid_date,
    "not_in_future": _not_in_future,
}
