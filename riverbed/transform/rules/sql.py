"""The SQL every rule family builds with: sqlglot expressions for the batch's columns and
relations, literals that both engines read alike, and the one-row shape of a dataset check.

Column names come from the source database and are always quoted; aliases are Riverbed's own.
Values written into SQL are literals, never pasted text: bounds are exact decimals written
without exponents (1e-05 is 0.00001), instants are TIMESTAMPTZ literals in UTC. A reason is text
built with ``||``, so it is NULL if any part is, which it never is: reasons are only built for
failing rows, whose values are not NULL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from riverbed.config.tables import QualityRule

BATCH = "b"  # alias of the batch relation in every compiled statement
UNCHECKED_OPS = ("D", "T")  # changes without a row image: deletes and truncates


BATCH = "b"  # alias of the batch relation in every compiled statement
UNCHECKED_OPS = ("D", "T")  # changes without a row image: deletes and truncates


def col(name: str, table: str | None = BATCH) -> exp.Column:
    # Column names come from the source database and may need quoting; aliases are ours.
    qualifier = exp.to_identifier(table) if table is not None else None
    return exp.Column(this=exp.to_identifier(name, quoted=True), table=qualifier)


def relation(name: str, alias: str | None) -> exp.Table:
    table = exp.to_table(name)
    if alias is not None:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return table


def live(alias: str = BATCH) -> exp.Expr:
    ops = [exp.Literal.string(op) for op in UNCHECKED_OPS]
    return exp.In(this=col("_op", alias), expressions=ops).not_()


def as_text(value: exp.Expr) -> exp.Cast:
    return exp.cast(value, "VARCHAR")


def concat(*parts: exp.Expr | str) -> exp.Expr:
    """``a || b || ...``: NULL if any part is NULL, which reasons never are (they are only
    built for failing rows, whose values are not NULL)."""
    nodes = [exp.Literal.string(p) if isinstance(p, str) else p for p in parts]
    result = nodes[0]
    for node in nodes[1:]:
        result = exp.DPipe(this=result, expression=node)
    return result


def number_text(number: float) -> str:
    """1.0 -> '1', 0.25 -> '0.25', 1e-05 -> '0.00001' (never exponent notation)."""
    if number.is_integer():
        return str(int(number))
    return format(Decimal(repr(number)), "f")


def number_literal(number: float) -> exp.Expr:
    # An integral bound stays an integer literal, so integer columns compare as integers;
    # other bounds are exact decimal literals in both engines.
    return exp.Literal.number(number_text(number))


def decimal_literal(number: float) -> exp.Expr:
    text = format(Decimal(repr(number)), "f")
    return exp.Literal.number(text if "." in text else text + ".0")


def within(measure: exp.Expr, rule: QualityRule) -> exp.Expr:
    """min <= measure <= max, for the bounds the rule gives (TRUE for none)."""
    checks = bound_checks(measure, rule)
    return exp.and_(*checks) if checks else exp.true()


def bound_checks(measure: exp.Expr, rule: QualityRule) -> list[exp.Expr]:
    conditions: list[exp.Expr] = []
    if rule.min is not None:
        conditions.append(measure.copy() >= number_literal(rule.min))
    if rule.max is not None:
        conditions.append(measure.copy() <= number_literal(rule.max))
    return conditions


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(sep=" ", timespec="microseconds")


def timestamp_literal(moment: datetime) -> exp.Cast:
    # DuckDB's TIMESTAMPTZ is Spark's TIMESTAMP: an instant, compared in UTC by both.
    return exp.cast(exp.Literal.string(iso(moment)), "TIMESTAMPTZ")


def dataset_row(
    query: exp.Select,
    checked: exp.Expr,
    failed: exp.Expr | None,
    passed: exp.Expr,
    observed: exp.Expr,
) -> exp.Select:
    if failed is None:
        failed = exp.Case(
            ifs=[exp.If(this=passed.copy(), true=exp.Literal.number(0))],
            default=exp.Literal.number(1),
        )
    return query.select(
        exp.cast(checked, "BIGINT").as_("checked"),
        exp.cast(failed, "BIGINT").as_("failed"),
        passed.as_("passed"),
        exp.cast(observed, "VARCHAR").as_("observed"),
        append=True,
    )


def describe(exc: SqlglotError) -> str:
    """sqlglot's message without its terminal underline codes."""
    if isinstance(exc, ParseError) and exc.errors:
        first = exc.errors[0]
        return f"{first['description']} at line {first['line']}, column {first['col']}"
    return str(exc)
