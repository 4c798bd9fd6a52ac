"""Checking one batch: the table's transforms as view ``transformed``, its quality rules
run over it in one query that flags each row (in source order), each rule's result, and the
split into staged and quarantined rows. Each step takes the engine, the compiled checks and
the rows it works on, and returns what it found."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from riverbed.config.tables import QualityRule, TableConfig
from riverbed.errors import ConfigError
from riverbed.lake.schema import CDC_COLUMNS
from riverbed.lake.schema import POSITION_COLUMNS as POSITION
from riverbed.state.records import QualityResult
from riverbed.transform.duckdb_engine import DuckDBEngine
from riverbed.transform.engine import DIALECT, TransformEngine, TransformEngineError
from riverbed.transform.read import EMPTY, TYPE_RULE
from riverbed.transform.rules import CompiledChecks, compile_checks
from riverbed.transform.rules.context import RuleContext
from riverbed.transform.rules.schema import check_schema
from riverbed.transform.rules.sql import BATCH

SAMPLES = 5


def flag_rows(
    engine: TransformEngine,
    table: str,
    cfg: TableConfig,
    raw: pa.Table,
    shape: pa.Schema,
    checks: CompiledChecks,
    context: RuleContext,
) -> pa.Table:
    """The transformed rows in source order, with a _fail_/_reason_ column pair per row rule,
    in DuckDB's types (see _conform). ``context``: what ``checks`` were compiled in, to find
    the rule at fault should the query fail."""
    # in source order: _flag has the engine sort whatever could have shuffled it
    flagged = _flag_beside(engine, cfg, raw, shape, checks)
    if flagged is None:
        flagged = _flag(engine, table, checks, context)
    if not engine.returns_reference_types:
        flagged = _conform(flagged, shape)
    return flagged


def rule_results(
    engine: TransformEngine,
    cfg: TableConfig,
    shape: pa.Schema,
    checks: CompiledChecks,
    flagged: pa.Table,
) -> list[QualityResult]:
    """Each rule's result on the ``flagged`` rows: the row rules', then the dataset rules'."""
    dataset = [_dataset_result(engine, c.rule, c.query, shape, flagged) for c in checks.dataset]
    return _row_results(cfg, checks, flagged) + dataset


def register_transforms(
    engine: TransformEngine, probe: DuckDBEngine, table: str, cfg: TableConfig, schema: pa.Schema
) -> pa.Schema:
    """Register the transforms as view ``transformed``; returns its columns and types
    (DuckDB's, the dialect of the config, whichever engine runs), found with ``probe``, an
    in-memory DuckDB the caller owns (see TransformRun._type_probe)."""
    statement = transform_statement(table, cfg, schema)
    try:
        shape = _reference_schema(probe, statement, schema)
        engine.register_view("transformed", statement)
        return shape
    except TransformEngineError as exc:
        if exc.transient:
            raise
        raise TransformEngineError(
            f"{table}: transforms/filter: {exc}; fix tables.{table}.transforms "
            f"or .filter (columns: {', '.join(schema.names)})"
        ) from exc


def _flag(
    engine: TransformEngine, table: str, checks: CompiledChecks, context: RuleContext
) -> pa.Table:
    # joins and windows (some rules need them) shuffle rows: then the engine sorts them
    # back, in parallel; plain per-row checks keep the input order in an engine that
    # keeps_input_order
    if not checks.row_rules:
        everything = exp.select(exp.Star()).from_("transformed")
        if engine.keeps_input_order:
            return engine.query(everything)
        return engine.query(everything.order_by(exp.column("_lsn"), exp.column("_seq")))
    shuffles = _shuffles(checks)
    ordered = (
        checks.flagged.order_by(exp.column("_lsn"), exp.column("_seq"))
        if shuffles or not engine.keeps_input_order
        else checks.flagged
    )
    try:
        if shuffles and engine.keeps_input_order:
            return _flag_in_order(engine, checks, ordered)
        return engine.query(ordered)
    except TransformEngineError as exc:
        if exc.transient:
            raise
        # one statement runs every rule: find the rule at fault, so the message names it
        for rule in checks.row_rules:
            single = compile_checks("transformed", [rule], context)
            try:
                engine.query(single.flagged.limit(0))
            except TransformEngineError as culprit:
                raise TransformEngineError(
                    f"{table}: quality rule {rule.label}: {culprit}; fix it under "
                    f"tables.{table}.quality"
                ) from exc
        raise


def _flag_beside(
    engine: TransformEngine,
    cfg: TableConfig,
    raw: pa.Table,
    shape: pa.Schema,
    checks: CompiledChecks,
) -> pa.Table | None:
    """The flagged rows, each column the transforms leave alone taken from ``raw`` as it
    is, when the engine keeps_input_order and keeps every row of the batch (no filter);
    None otherwise. The engine computes only the transformed columns and the flags:
    copying every column in and out of it cost as much as all the rules. Rules that
    shuffle rows (joins, windows) have just those columns sorted back into source order,
    not whole rows."""
    if not engine.keeps_input_order or cfg.filter:
        return None
    computed = [n for n in shape.names if n in cfg.transforms]
    narrow = _positions_and_flags(checks, computed)
    if narrow is None:
        return None
    if _shuffles(checks):
        narrow = narrow.order_by(*(exp.column(c) for c in POSITION))
    try:
        result = engine.query(narrow)
    except TransformEngineError as exc:
        if exc.transient:
            raise
        return None  # _flag runs it again and finds the rule at fault
    if not _aligned(result, raw):
        return None
    columns = []
    for field_ in shape:
        column = (result if field_.name in cfg.transforms else raw).column(field_.name)
        if column.type != field_.type:
            column = column.cast(field_.type)
        columns.append(column)
    helpers = result.schema.names[len(POSITION) + len(computed) :]
    fields = [*shape, *(result.schema.field(n) for n in helpers)]
    return pa.Table.from_arrays(
        [*columns, *(result.column(n) for n in helpers)], schema=pa.schema(fields)
    )


def _flag_in_order(
    engine: TransformEngine, checks: CompiledChecks, ordered: exp.Select
) -> pa.Table:
    """The flagged rows in source order when the rules shuffle them in an engine that
    keeps_input_order, and a filter drops rows (else _flag_beside does it).

    Sorting the whole result costs twice the query that computes it: every column of
    every row goes through the sort. So only the positions and flags are sorted, and the
    rows are read a second time, without the rules' joins, which keeps their order; the
    two are put side by side once their positions are seen to match row for row."""
    narrow = _positions_and_flags(checks, [])
    if narrow is None:
        return engine.query(ordered)
    flags = engine.query(narrow.order_by(*(exp.column(c) for c in POSITION)))
    rows = engine.query(exp.select(exp.Star()).from_("transformed"))
    if not _aligned(flags, rows):
        return engine.query(ordered)
    for name in flags.column_names[len(POSITION) :]:
        rows = rows.append_column(name, flags.column(name))
    return rows


def _dataset_result(
    engine: TransformEngine,
    rule: QualityRule,
    query: exp.Select | None,
    shape: pa.Schema,
    rows: pa.Table,
) -> QualityResult:
    checked = _checked_rows(rows)
    if query is None:  # the schema rule: decided on the Arrow schema
        passed, observed = check_schema(rule, shape)
        failed = 0 if passed else 1
    else:
        row = engine.query(query).to_pylist()[0]
        checked = int(row["checked"] or 0)
        failed = int(row["failed"] or 0)
        passed = bool(row["passed"])
        observed = row["observed"]
    return QualityResult(
        rule=rule.label,
        rule_type=rule.type,
        action=rule.action,
        checked=checked,
        failed=failed,
        status="pass" if passed else _status(rule.action),
        observed=observed,
    )


def _row_results(
    cfg: TableConfig, checks: CompiledChecks, flagged: pa.Table
) -> list[QualityResult]:
    checked = _checked_rows(flagged)
    results = []
    for i, rule in enumerate(checks.row_rules):
        failing = flagged.column(f"_fail_{i}")
        failed = int(pc.sum(failing.cast(pa.int64())).as_py() or 0)
        samples: list[Any] = []
        if failed:
            rows = flagged.filter(failing).slice(0, SAMPLES).select(list(cfg.keys))
            samples = [
                r[cfg.keys[0]] if len(cfg.keys) == 1 else list(r.values()) for r in rows.to_pylist()
            ]
        results.append(
            QualityResult(
                rule=rule.label,
                rule_type=rule.type,
                action=rule.action,
                checked=checked,
                failed=failed,
                status="pass" if failed == 0 else _status(rule.action),
                samples=samples,
            )
        )
    return results


def split(checks: CompiledChecks, flagged: pa.Table) -> tuple[pa.Table, pa.Table]:
    helper = [c for c in flagged.column_names if c.startswith(("_fail_", "_reason_"))]
    quarantining = [i for i, r in enumerate(checks.row_rules) if r.action == "quarantine"]
    if not quarantining:
        return flagged.drop_columns(helper), EMPTY
    mask = flagged.column(f"_fail_{quarantining[0]}")
    for i in quarantining[1:]:
        mask = pc.or_(mask, flagged.column(f"_fail_{i}"))
    if not pc.any(mask).as_py():
        return flagged.drop_columns(helper), EMPTY  # the usual case: no copy
    bad = flagged.filter(mask)
    good = flagged.filter(pc.invert(mask)).drop_columns(helper)
    if bad.num_rows == 0:
        return good, EMPTY
    labels = [
        pc.if_else(bad.column(f"_fail_{i}"), checks.row_rules[i].label, None) for i in quarantining
    ]
    reasons = [
        pc.if_else(bad.column(f"_fail_{i}"), bad.column(f"_reason_{i}"), None) for i in quarantining
    ]
    rule_column = pc.binary_join_element_wise(*labels, ", ", null_handling="skip")
    reason_column = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip")
    bad = bad.drop_columns(helper).append_column("_rule", rule_column)
    bad = bad.append_column("_reason", reason_column)
    return good, bad


def _shuffles(checks: CompiledChecks) -> bool:
    """Whether the rules' query may return rows out of source order (joins, windows)."""
    return checks.flagged.find(exp.Join, exp.Window, exp.Subquery) is not None


def _positions_and_flags(checks: CompiledChecks, columns: list[str]) -> exp.Select | None:
    """The rules' query with the batch's POSITION and ``columns`` in place of all its
    columns (and the flags after them); None if it is not the shape compile_checks builds."""
    head = checks.flagged.expressions[0]
    if not (isinstance(head, exp.Column) and isinstance(head.this, exp.Star)):
        return None
    narrow = checks.flagged.copy()
    kept = (exp.column(n, table=BATCH, quoted=True) for n in [*POSITION, *columns])
    narrow.set("expressions", [*kept, *narrow.expressions[1:]])
    return narrow


def _aligned(one: pa.Table, other: pa.Table) -> bool:
    """Whether two results hold the same changes in the same order, row for row."""
    return one.num_rows == other.num_rows and all(
        pc.all(pc.equal(one.column(c), other.column(c))).as_py() is not False for c in POSITION
    )


def _conform(rows: pa.Table, shape: pa.Schema) -> pa.Table:
    """Another engine's result in DuckDB's types (the staged files must not depend on the
    engine): each column of ``shape`` cast to its type, the rule helper columns kept."""
    for index, field_ in enumerate(rows.schema):
        if field_.name in shape.names:
            wanted = shape.field(field_.name)
            if field_.type != wanted.type:
                rows = rows.set_column(index, wanted, rows.column(index).cast(wanted.type))
    return rows


def _reference_schema(probe: DuckDBEngine, statement: exp.Select, schema: pa.Schema) -> pa.Schema:
    """The types DuckDB gives ``statement``'s columns, found on an empty input in ``probe``.

    The config's SQL is DuckDB's dialect, so its types are the reference: another engine's
    result (Spark widens decimal products, counts in int32, ...) is cast to them, and the
    staged files are the same whichever engine ran.
    """
    probe.register("batch", schema.empty_table())
    return probe.query(statement).schema


def check_pii(table: str, cfg: TableConfig, shape: pa.Schema) -> None:
    """A PII column the rows do not have is a typo: skipping it would leave the real column's
    personal data in clear text in every staged file and in the warehouse."""
    missing = [name for name in cfg.pii if name not in shape.names]
    if missing:
        columns = ", ".join(n for n in shape.names if not n.startswith("_"))
        raise ConfigError(
            [
                f"tables.{table}.pii.{missing[0]}: {table} has no column {missing[0]!r}, so "
                f"nothing would be protected; name one of its columns ({columns})"
            ]
        )


def untyped_result(cfg: TableConfig, rows_in: int, untyped: pa.Table) -> QualityResult:
    rows = untyped.slice(0, SAMPLES).select(list(cfg.keys)).to_pylist()
    samples = [r[cfg.keys[0]] if len(cfg.keys) == 1 else list(r.values()) for r in rows]
    return QualityResult(
        rule=TYPE_RULE,
        rule_type=TYPE_RULE,
        action="quarantine",
        checked=rows_in,
        failed=untyped.num_rows,
        status="quarantined",
        samples=samples,
    )


def _checked_rows(table: pa.Table) -> int:
    return int(pc.sum(pc.not_equal(table.column("_op"), "D").cast(pa.int64())).as_py() or 0)


def _status(action: str) -> str:
    return {"quarantine": "quarantined", "warn": "warn", "fail": "fail"}[action]


def transform_statement(table: str, cfg: TableConfig, schema: pa.Schema) -> exp.Select:
    """SELECT the batch's columns with the table's transforms applied, then its filter.

    A transform named like an existing column replaces it in place; a new name is added after
    the source columns. CDC columns stay last and untouched.
    """
    source = [n for n in schema.names if n not in CDC_COLUMNS]
    cdc = [n for n in schema.names if n in CDC_COLUMNS]
    expressions: dict[str, exp.Expr] = {}
    for name, text in cfg.transforms.items():
        try:
            expressions[name] = sqlglot.parse_one(text, read=DIALECT)
        except sqlglot.errors.ParseError as exc:
            raise ConfigError([f"tables.{table}.transforms.{name} = {text!r}: {exc}"]) from None
    columns: list[exp.Expr] = []
    for name in source:
        if name in expressions:
            columns.append(exp.alias_(expressions.pop(name), name, quoted=True))
        else:
            columns.append(exp.column(name, quoted=True))
    for name, expression in expressions.items():
        columns.append(exp.alias_(expression, name, quoted=True))
    columns.extend(exp.column(n, quoted=True) for n in cdc)
    select = exp.select(*columns).from_("batch")
    if cfg.filter:
        try:
            condition = sqlglot.parse_one(cfg.filter, read=DIALECT)
        except sqlglot.errors.ParseError as exc:
            raise ConfigError([f"tables.{table}.filter = {cfg.filter!r}: {exc}"]) from None
        is_delete = exp.EQ(this=exp.column("_op"), expression=exp.Literal.string("D"))
        select = select.where(exp.or_(is_delete, exp.paren(condition)))
    return select
