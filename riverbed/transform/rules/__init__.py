"""Quality rules compiled to SQL once, so every transform engine runs the same logic.

A table's rules become sqlglot expressions in Riverbed's dialect (``DIALECT``): one ``flagged``
statement that returns the batch's rows with a ``_fail_i``/``_reason_i`` pair per row-level rule,
and one single-row statement per dataset-level rule. The DuckDB and Spark engines generate the
same trees, so the SQL sticks to what both run: no DISTINCT window aggregates and no IN/EXISTS
subquery in a SELECT list. Lookups (``unique``, ``references``, ``sql_row``, ``expression``)
are LEFT JOINs to grouped or DISTINCT subqueries, which never multiply the batch's rows.

This module assembles a table's checks (``compile_checks``); each rule family compiles in a
module of its own: ``rows`` (row rules on the row's values, ``unique``, ``references``),
``custom`` (``sql_row``, ``expression``, ``sql_dataset``), ``dataset`` (aggregates over the
batch) and ``schema`` (the ``schema`` rule, run in Python on the Arrow schema). They build with ``sql``
(column, relation and literal helpers) against ``context`` (``RuleContext``, ``RuleError``).

Decisions worth knowing:

* **NULL passes** every rule except ``not_null``: a missing value is ``not_null``'s business,
  so e.g. ``range`` or ``references`` on a nullable column needs no extra guard. A ``sql_row``
  predicate that evaluates to NULL also passes (the ``where``-style semantics of dbt and Great
  Expectations); write ``coalesce(..., false)`` to make NULL fail. ``expression`` is that
  other reading, dbt's ``expression_is_true``: a row passes only when its expression is TRUE,
  so a NULL result fails (the value a NULL column gives it is the expression's business).
* **Deletes are never checked.** A ``D`` row carries only the key columns, and a ``T``
  (truncate) row carries none, so row rules never fail them and dataset rules do not count
  them in ``checked``. ``row_count`` counts every change, deletes included, as the batch sizes
  in ``RuleContext.recent_counts`` do.
* **unique is across keys, not rows.** Rows of one key in one batch are versions of one entity,
  so a value fails only when another *key* holds it: another key in this batch, or another key
  in the table's current rows. Current rows of keys that appear in this batch are left out of
  that comparison, because the batch supersedes them: a customer deleted (or moved to another
  e-mail) in this batch frees its e-mail for a new customer in the same batch. Within a batch
  the check is not sequential: two keys that held a value one after the other both fail.
* **Custom SQL is checked at compile time**: it must parse, its config table names are
  rewritten to their relations (anything else is an error that says to add the table to
  ``tables:``), and columns that certainly belong to the table must exist in the batch. In a
  ``sql_row`` predicate, unqualified names and ``<table>.column`` are the row's columns; inside
  a subquery an unqualified name resolves to the subquery's tables first (plain SQL scoping), so
  correlate with ``<table>.column``, and ``<table>`` as a table there means its current rows.
  The predicate runs in the WHERE of a subquery that collects the failing rows' (``_lsn``,
  ``_seq``), which identifies a change within a table, so IN/EXISTS work on Spark too. In
  ``sql_dataset``, ``<table>`` is the raw batch, deletes included (filter on ``_op``).
* Aggregates of no values: a sum or count of nothing is 0, so an empty batch can fail a
  ``row_count``, ``sum`` or ``distinct_count`` minimum; a mean or newest value of nothing is
  undefined and passes, so ``mean`` and ``freshness`` pass an empty batch (pair them with
  ``row_count``). ``row_count`` with a threshold but no recent counts has nothing to compare
  against and passes.
* Values written into SQL (bounds, patterns, accepted values, ``now``) are literals, never
  text pasted into SQL, and ``now`` is fixed by the caller so a retry on another engine gives
  the same answer. Fractional thresholds are exact decimals (0.7 of 10 rows is 7, not
  7.000000000000001).
* ``valid_date`` reads strings with TRY_CAST; its ``min``/``max`` are years, inclusive.

Dataset statements return one row: ``checked BIGINT`` (non-delete rows), ``failed BIGINT``
(violating rows where that means something: nulls for ``not_null`` with a threshold, returned
rows for ``sql_dataset``; otherwise 0 or 1), ``passed BOOLEAN`` and ``observed VARCHAR``.
Regular expressions run on the engine (RE2 in DuckDB, java.util.regex in Spark) with search
semantics, like ``re.search``; keep patterns to the syntax all three share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from riverbed.config.tables import QualityRule
from riverbed.transform.rules.context import RuleContext, RuleTarget
from riverbed.transform.rules.dataset import dataset_check
from riverbed.transform.rules.rows import row_check
from riverbed.transform.rules.schema import parse_type, unknown_type
from riverbed.transform.rules.sql import BATCH, live, relation


@dataclass(frozen=True)
class DatasetCheck:
    rule: QualityRule
    # one row (checked, failed, passed, observed); None for the schema rule (see check_schema)
    query: exp.Select | None


@dataclass(frozen=True)
class CompiledChecks:
    row_rules: list[QualityRule]  # rule i of this list <-> columns _fail_{i}, _reason_{i}
    flagged: exp.Select  # the batch's rows plus _fail_i, _reason_i for every row rule
    dataset: list[DatasetCheck]


def compile_checks(batch: str, rules: Sequence[QualityRule], ctx: RuleContext) -> CompiledChecks:
    """Compile ``rules`` of table ``ctx.table`` against the batch relation ``batch``.

    Raises :class:`RuleError` when a rule names a column the batch lacks, a table that is not
    configured, or holds SQL that does not parse.

    >>> from datetime import UTC, datetime
    >>> ctx = RuleContext("orders", ["id"], ["id", "qty", "_op"], datetime.now(UTC), None, {}, [])
    >>> checks = compile_checks("batch", [QualityRule(type="not_null", column="qty")], ctx)
    >>> print(checks.flagged.sql(dialect="duckdb", pretty=True))
    SELECT
      b.*,
      COALESCE(NOT b."_op" IN ('D', 'T') AND b."qty" IS NULL, FALSE) AS _fail_0,
      CASE WHEN NOT b."_op" IN ('D', 'T') AND b."qty" IS NULL THEN 'qty is null' END AS _reason_0
    FROM batch AS b
    """
    target = RuleTarget(batch, ctx)
    row_rules: list[QualityRule] = []
    selects: list[exp.Expr] = [exp.Column(this=exp.Star(), table=exp.to_identifier(BATCH))]
    joins: list[tuple[exp.Expr, exp.Expr]] = []
    dataset: list[DatasetCheck] = []
    for rule in rules:
        _check_columns(target, rule)
        if not rule.dataset_level:
            index = len(row_rules)
            row = row_check(target, rule, index)
            failing = exp.and_(live(), row.fails)
            selects.append(exp.alias_(exp.func("COALESCE", failing, exp.false()), f"_fail_{index}"))
            reason = exp.Case(ifs=[exp.If(this=failing.copy(), true=row.reason)])
            selects.append(exp.alias_(reason, f"_reason_{index}"))
            joins.extend(row.joins)
            row_rules.append(rule)
        else:
            dataset.append(DatasetCheck(rule, dataset_check(target, rule)))
    flagged = exp.select(*selects).from_(relation(batch, BATCH))
    for subquery, on in joins:
        flagged = flagged.join(subquery, on=on, join_type="left")
    flagged = _portable_text(flagged, ctx)
    dataset = [
        DatasetCheck(d.rule, None if d.query is None else _portable_text(d.query, ctx))
        for d in dataset
    ]
    return CompiledChecks(row_rules, flagged, dataset)


TEXT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def _portable_text(tree: exp.Select, ctx: RuleContext) -> exp.Select:
    """Reasons show values as text, and engines print timestamps differently (DuckDB appends
    the offset, Spark does not): timestamps are formatted explicitly, so a quarantined row's
    reason is the same text whichever engine found it."""
    timestamps = {name for name, kind in ctx.types.items() if pa.types.is_timestamp(kind)}
    if not timestamps:
        return tree

    def is_timestamp(node: exp.Expr) -> bool:
        if isinstance(node, exp.Column):
            return node.name in timestamps
        if isinstance(node, exp.Max | exp.Min):
            return is_timestamp(node.this)
        return False

    def rewrite(node: exp.Expr) -> exp.Expr:
        if (
            isinstance(node, exp.Cast)
            and node.to.is_type(exp.DataType.Type.VARCHAR)
            and is_timestamp(node.this)
        ):
            return exp.TimeToStr(this=node.this.copy(), format=exp.Literal.string(TEXT_TIME_FORMAT))
        return node

    return tree.transform(rewrite)  # type: ignore[return-value]


def _check_columns(target: RuleTarget, rule: QualityRule) -> None:
    if rule.column is not None and rule.column not in target.ctx.columns:
        raise target.missing_column(rule, rule.column)
    if rule.type == "unique":
        for key in target.ctx.keys:
            if key not in target.ctx.columns:
                raise target.missing_column(rule, key, "key column")
    if rule.type == "schema":
        for sql_type in (rule.columns or {}).values():
            if parse_type(sql_type) is None:
                raise target.fail(rule, unknown_type(sql_type))
