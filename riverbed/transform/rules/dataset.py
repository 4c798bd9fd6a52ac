"""Dataset rules: each compiles to one single-row statement over the whole batch, returning
``checked`` (non-delete rows), ``failed``, ``passed`` and ``observed`` (``sql.dataset_row``).

Aggregates of no values follow SQL: a sum or count of nothing is 0, so an empty batch can fail a
minimum; a mean or newest value of nothing is NULL, which passes. ``row_count`` counts every
change, deletes included, and compares with the recent batches' mean in exact arithmetic.
``schema`` has no statement (it runs in Python: ``schema.check_schema``) and ``sql_dataset`` is
compiled by ``custom``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from sqlglot import exp

from riverbed.config.tables import QualityRule
from riverbed.transform.rules.context import RuleTarget
from riverbed.transform.rules.custom import sql_dataset
from riverbed.transform.rules.sql import (
    BATCH,
    as_text,
    bound_checks,
    col,
    concat,
    dataset_row,
    decimal_literal,
    iso,
    live,
    number_text,
    relation,
    timestamp_literal,
    within,
)


def dataset_check(target: RuleTarget, rule: QualityRule) -> exp.Select | None:
    if rule.type == "schema":
        return None
    if rule.type == "sql_dataset":
        return sql_dataset(target, rule)
    if rule.type == "row_count":
        return _row_count(target, rule)
    assert rule.column is not None
    value = col(rule.column)
    count = exp.func("COUNT", exp.Star())
    passed: exp.Expr
    failed: exp.Expr | None = None
    if rule.type == "not_null":
        assert rule.threshold is not None
        non_null = exp.func("COUNT", value)
        # The threshold is an exact decimal literal: 0.7 * 10 must be 7, not 7.000000001.
        passed = exp.GTE(
            this=non_null,
            expression=exp.Mul(this=decimal_literal(rule.threshold), expression=count),
        )
        failed = exp.Sub(this=count.copy(), expression=non_null.copy())
        observed = concat(
            as_text(non_null.copy()),
            " of ",
            as_text(count.copy()),
            f" non-null (threshold {number_text(rule.threshold)})",
        )
    elif rule.type == "freshness":
        assert rule.max_age_seconds is not None
        newest = exp.func("MAX", value)
        cutoff = target.ctx.now - timedelta(seconds=rule.max_age_seconds)
        # No values at all is not stale data: a quiet table is row_count's business.
        passed = exp.func("COALESCE", newest >= timestamp_literal(cutoff), exp.true())
        observed = concat(
            exp.func(
                "COALESCE",
                concat("newest ", as_text(newest.copy())),
                exp.Literal.string("no values"),
            ),
            f", cutoff {iso(cutoff)}",
        )
    elif rule.type == "distinct_count":
        distinct = exp.Count(this=exp.Distinct(expressions=[value]))
        passed = within(distinct, rule)
        observed = concat(as_text(distinct.copy()), " distinct values")
    elif rule.type == "mean":
        mean = exp.func("AVG", value)
        # The mean of no values is undefined, so it passes (NULL passes).
        passed = exp.func("COALESCE", within(mean, rule), exp.true())
        observed = exp.func(
            "COALESCE", concat("mean ", as_text(mean.copy())), exp.Literal.string("no values")
        )
    else:  # sum
        total = exp.func("COALESCE", exp.func("SUM", value), exp.Literal.number(0))
        # The sum of no values is 0, so an empty batch fails a positive min.
        passed = within(total, rule)
        observed = concat("sum ", as_text(total.copy()))
    query = exp.select().from_(relation(target.batch, BATCH)).where(live())
    return dataset_row(query, count.copy(), failed, passed, observed)


def _row_count(target: RuleTarget, rule: QualityRule) -> exp.Select:
    changes = exp.func("COUNT", exp.Star())
    # COUNT of a CASE without ELSE: 0, not NULL, for an empty batch
    checked = exp.func("COUNT", exp.Case(ifs=[exp.If(this=live(), true=exp.Literal.number(1))]))
    conditions = bound_checks(changes, rule)
    note = ""
    if rule.threshold is not None and target.ctx.recent_counts:
        recent = target.ctx.recent_counts
        # count >= threshold * mean  <=>  count >= ceil(threshold * mean), in exact
        # arithmetic so a boundary count is not lost to float rounding.
        exact = Fraction(Decimal(repr(rule.threshold))) * Fraction(sum(recent), len(recent))
        needed = math.ceil(exact)
        conditions.append(changes >= exp.Literal.number(needed))
        note = f" (recent mean {sum(recent) / len(recent):g}, needs at least {needed})"
    passed = exp.and_(*conditions) if conditions else exp.true()
    observed = concat(as_text(changes.copy()), f" rows{note}")
    query = exp.select().from_(relation(target.batch, BATCH))
    return dataset_row(query, checked, None, passed, observed)
