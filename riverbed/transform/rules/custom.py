"""Custom SQL rules: ``sql_row`` (a predicate each row must satisfy), ``expression`` (a
boolean each row must make true) and ``sql_dataset`` (a query that returns the batch's bad rows).

``sql_row`` and ``expression`` compile alike and differ only when the SQL is NULL: ``sql_row``
passes the row (a WHERE's reading: nothing says it is bad), ``expression`` fails it, as dbt's
``expression_is_true`` does (it fails every row where the expression is not true), so
``quantity > 0`` fails a row without a quantity.

Both are checked at compile time (see the package's docstring for the scoping rules): the SQL
must parse, names of config tables are rewritten to their relations (``_rewrite_tables``; any
other table is a RuleError saying to add it to ``tables:``), and a column that certainly
belongs to the table must be one of the batch's. A ``sql_row`` predicate runs in the WHERE of a
subquery collecting the failing rows' (``_lsn``, ``_seq``), never in a SELECT list, because
Spark accepts IN/EXISTS subqueries only in filters.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from riverbed.config.tables import QualityRule
from riverbed.lake.schema import POSITION_COLUMNS
from riverbed.transform.engine import DIALECT
from riverbed.transform.rules.context import RowCheck, RuleTarget
from riverbed.transform.rules.sql import BATCH, as_text, col, concat, describe, live, relation


def sql_row(target: RuleTarget, rule: QualityRule, index: int) -> RowCheck:
    assert rule.sql is not None
    try:
        predicate = sqlglot.parse_one(rule.sql, read=DIALECT, into=exp.Condition)
    except SqlglotError as exc:
        raise target.fail(rule, f"invalid SQL: {describe(exc)}") from exc
    if isinstance(predicate, exp.Block):
        raise target.fail(rule, "sql must be one boolean expression over the row's columns")
    for column in list(predicate.find_all(exp.Column)):
        if column.table:
            # "orders.x" is the row's x, also inside a subquery (the way to correlate),
            # unless that subquery reads the table itself under that name
            if column.table != target.ctx.table or _names_own_table(target, column):
                continue
        elif column.find_ancestor(exp.Query) is not None:
            continue  # unqualified inside a subquery: SQL resolves it there first
        if column.name not in target.ctx.columns:
            raise target.missing_column(rule, column.name)
        column.set("table", exp.to_identifier(BATCH))
    if target.ctx.current is None:
        # First batch: the table has no current rows yet, only the batch's columns.
        own: exp.Expr = exp.select("*").from_(relation(target.batch, "e")).where(exp.false())
    else:
        own = relation(target.ctx.current, None)
    condition = _rewrite_tables(target, rule, predicate, own=own)
    # The predicate is evaluated in a WHERE, never in the SELECT list, because Spark
    # accepts IN/EXISTS subqueries only in filters. (_lsn, _seq) identifies a change
    # within a table; identical duplicates would get the same answer anyway.
    alias = f"_j{index}"
    ids = POSITION_COLUMNS
    null_passes = rule.type == "sql_row"  # see the module's docstring
    failing = (
        exp.select(*(col(c) for c in ids), exp.alias_(exp.true(), "_hit"))
        .distinct()
        .from_(relation(target.batch, BATCH))
        .where(exp.and_(live(), exp.func("COALESCE", condition, exp.convert(null_passes)).not_()))
    )
    on = exp.and_(*(col(c).eq(col(c, alias)) for c in ids))
    shown = " ".join(rule.sql.split())
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    reason = exp.Literal.string(
        f"does not satisfy {shown}" if null_passes else f"not true: {shown}"
    )
    return RowCheck(
        col("_hit", alias).is_(exp.null()).not_(), reason, [(failing.subquery(alias), on)]
    )


def _names_own_table(target: RuleTarget, column: exp.Column) -> bool:
    select = column.find_ancestor(exp.Select)
    while select is not None:
        for table in select.find_all(exp.Table):
            if table.parent_select is select and table.alias_or_name == target.ctx.table:
                return True
        select = select.find_ancestor(exp.Select)
    return False


def _rewrite_tables(
    target: RuleTarget, rule: QualityRule, tree: exp.Expr, own: exp.Expr
) -> exp.Expr:
    """Point config table names at their relations; ``own`` stands for the table itself.
    The original name stays as the alias, so ``orders.amount`` keeps working."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}

    def replace(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
            return node  # not a table, or a table function
        name = exp.table_name(node)  # "db.name" when qualified: never a config table
        if name.lower() in ctes:
            return node
        alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
        if name == target.ctx.table:
            standin = own.copy()
            if isinstance(standin, exp.Table):
                standin.set("alias", alias)
                return standin
            return exp.Subquery(this=standin, alias=alias)
        table = exp.to_table(target.relation_of(rule, name))
        table.set("alias", alias)
        return table

    return tree.transform(replace)


def sql_dataset(target: RuleTarget, rule: QualityRule) -> exp.Select:
    assert rule.sql is not None
    try:
        statements = sqlglot.parse(rule.sql, read=DIALECT)
    except SqlglotError as exc:
        raise target.fail(rule, f"invalid SQL: {describe(exc)}") from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise target.fail(rule, "sql must be a single query (SELECT ...) returning bad rows")
    _check_query_columns(target, rule, statements[0])
    query = _rewrite_tables(target, rule, statements[0], own=relation(target.batch, None))
    assert isinstance(query, exp.Query)
    checked = (
        exp.select(exp.func("COUNT", exp.Star()).as_("n"))
        .from_(relation(target.batch, BATCH))
        .where(live())
    )
    returned = exp.select(exp.func("COUNT", exp.Star()).as_("n")).from_(query.subquery("q"))
    failed = col("n", "f")
    return (
        exp.select(
            exp.cast(col("n", "c"), "BIGINT").as_("checked"),
            exp.cast(failed, "BIGINT").as_("failed"),
            failed.copy().eq(exp.Literal.number(0)).as_("passed"),
            concat(as_text(failed.copy()), " rows returned").as_("observed"),
        )
        .from_(checked.subquery("c"))
        .join(returned.subquery("f"), join_type="cross")
    )


def _check_query_columns(target: RuleTarget, rule: QualityRule, query: exp.Query) -> None:
    """Columns that certainly come from this table must exist in the batch: qualified by
    an alias of it, or unqualified in a scope that reads nothing else."""
    try:
        scopes = traverse_scope(query)
    except SqlglotError:
        return  # shapes the scope walker does not follow are left to the engine
    for scope in scopes:
        own = {
            alias
            for alias, source in scope.sources.items()
            if isinstance(source, exp.Table)
            and not source.args.get("db")
            and source.name == target.ctx.table
        }
        only_own = bool(own) and len(scope.sources) == len(own)
        select = scope.expression
        aliases = set(select.named_selects) if isinstance(select, exp.Select) else set()
        for column in scope.columns:
            if column.table:
                relevant = column.table in own
            else:
                relevant = only_own and column.name not in aliases
            if relevant and column.name not in target.ctx.columns:
                raise target.missing_column(rule, column.name)
