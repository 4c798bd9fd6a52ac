"""Quality rules compiled to SQL and run on DuckDB: every rule type at its boundary.

Each rule gets data that passes exactly at its limit and fails one step beyond it; deletes and
NULLs are mixed in to show that deletes never fail and NULL fails only ``not_null``.
"""

from __future__ import annotations

import doctest
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

import riverbed.transform.rules as rules_module
from riverbed.config.tables import QualityRule
from riverbed.transform.duckdb_engine import DuckDBEngine
from riverbed.transform.rules import CompiledChecks, compile_checks
from riverbed.transform.rules.context import RuleContext, RuleError
from riverbed.transform.rules.schema import check_schema

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
TS = pa.timestamp("us", tz="UTC")


def changes(columns: Mapping[str, Any], ops: Sequence[str] | None = None) -> pa.Table:
    """A batch as capture writes it: the given source columns plus the CDC columns."""
    arrays = {
        name: v if isinstance(v, pa.Array | pa.ChunkedArray) else pa.array(v)
        for name, v in columns.items()
    }
    n = len(next(iter(arrays.values()))) if arrays else len(ops or [])
    ops = list(ops) if ops is not None else ["I"] * n
    arrays["_op"] = pa.array(ops, pa.string())
    arrays["_commit_ts"] = pa.array([NOW] * n, TS)
    arrays["_lsn"] = pa.array([1000 + i for i in range(n)], pa.int64())
    arrays["_seq"] = pa.array(list(range(n)), pa.int64())
    arrays["_xid"] = pa.array([77] * n, pa.int64())
    return pa.table(arrays)


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    db = DuckDBEngine(threads=1)
    yield db
    db.close()


def compile_for(
    engine: DuckDBEngine,
    rules: Sequence[QualityRule],
    batch: pa.Table,
    *,
    table: str = "orders",
    keys: Sequence[str] = ("id",),
    current: pa.Table | None = None,
    references: Mapping[str, pa.Table] | None = None,
    recent: Sequence[int] = (),
    tables: Sequence[str] = (),
) -> CompiledChecks:
    engine.register("batch", batch)
    if current is not None:
        engine.register("current_rows", current)
    relations = {}
    for name, rows in (references or {}).items():
        engine.register(f"ref_{name}", rows)
        relations[name] = f"ref_{name}"
    ctx = RuleContext(
        table=table,
        keys=list(keys),
        columns=batch.column_names,
        now=NOW,
        current="current_rows" if current is not None else None,
        references=relations,
        recent_counts=list(recent),
        tables=list(tables),
    )
    return compile_checks("batch", rules, ctx)


def row_results(
    engine: DuckDBEngine, rule: QualityRule, batch: pa.Table, **kwargs: Any
) -> list[tuple[bool, str | None]]:
    """(fails, reason) of a single row rule for each batch row, in batch order."""
    checks = compile_for(engine, [rule], batch, **kwargs)
    assert checks.row_rules == [rule] and checks.dataset == []
    out = engine.query(checks.flagged).sort_by("_seq")
    assert out.num_rows == batch.num_rows
    assert out.column("_fail_0").null_count == 0
    assert pa.types.is_boolean(out.schema.field("_fail_0").type)
    return list(zip(out.column("_fail_0").to_pylist(), out.column("_reason_0").to_pylist()))


def fails(results: list[tuple[bool, str | None]]) -> list[bool]:
    return [failed for failed, _ in results]


def dataset_result(
    engine: DuckDBEngine, rule: QualityRule, batch: pa.Table, **kwargs: Any
) -> dict[str, Any]:
    checks = compile_for(engine, [rule], batch, **kwargs)
    assert checks.row_rules == [] and len(checks.dataset) == 1
    query = checks.dataset[0].query
    assert query is not None
    out = engine.query(query)
    assert out.schema.names == ["checked", "failed", "passed", "observed"]
    assert [str(t) for t in out.schema.types] == ["int64", "int64", "bool", "string"]
    assert out.num_rows == 1
    row: dict[str, Any] = out.to_pylist()[0]
    return row


def rule(**settings: Any) -> QualityRule:
    return QualityRule.model_validate(settings)


# --- not_null -----------------------------------------------------------------------------


def test_not_null_fails_only_nulls_of_live_rows(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "email": ["a@x", None, None]}, ops=["I", "U", "D"])
    results = row_results(engine, rule(type="not_null", column="email"), batch)
    assert results == [(False, None), (True, "email is null"), (False, None)]


@pytest.mark.parametrize(
    ("threshold", "non_null", "passed"),
    [(0.8, 8, True), (0.8, 7, False), (0.7, 7, True), (0.7, 6, False), (1.0, 10, True)],
)
def test_not_null_threshold_is_completeness(
    engine: DuckDBEngine, threshold: float, non_null: int, passed: bool
) -> None:
    # 10 live rows, plus deletes with null values that must not lower the ratio
    values = ["v"] * non_null + [None] * (10 - non_null) + [None, None]
    batch = changes({"id": list(range(12)), "email": values}, ops=["I"] * 10 + ["D", "D"])
    result = dataset_result(
        engine, rule(type="not_null", column="email", threshold=threshold), batch
    )
    assert result["passed"] is passed
    assert (result["checked"], result["failed"]) == (10, 10 - non_null)
    assert result["observed"].startswith(f"{non_null} of 10 non-null")


def test_not_null_threshold_passes_an_empty_batch(engine: DuckDBEngine) -> None:
    batch = changes({"id": pa.array([], pa.int64()), "email": pa.array([], pa.string())})
    result = dataset_result(engine, rule(type="not_null", column="email", threshold=0.9), batch)
    assert result["passed"] is True and result["checked"] == 0


# --- unique -------------------------------------------------------------------------------


def test_unique_versions_of_one_key_share_a_value(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 1, 1], "email": ["a", "a", "a"]}, ops=["I", "U", "U"])
    assert fails(row_results(engine, rule(type="unique", column="email"), batch)) == [False] * 3


def test_unique_fails_a_value_held_by_two_keys_in_the_batch(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "email": ["a", "a", "b"]})
    results = row_results(engine, rule(type="unique", column="email"), batch)
    reason = "email 'a' is also used by another key in this batch"
    assert results == [(True, reason), (True, reason), (False, None)]


def test_unique_ignores_nulls_and_deletes(engine: DuckDBEngine) -> None:
    # A delete never holds a value, even if a (malformed) delete row carried one.
    batch = changes({"id": [1, 2, 3, 4], "email": [None, None, "a", "a"]}, ops="IIID")
    assert fails(row_results(engine, rule(type="unique", column="email"), batch)) == [False] * 4


def test_unique_with_composite_keys(engine: DuckDBEngine) -> None:
    batch = changes(
        {
            "shop": [1, 1, 2, 1, 2],
            "id": [1, 1, 1, 2, 1],
            "email": ["a", "a", "b", "b", "c"],
        }
    )
    # (1,1) twice: one entity -> passes; (2,1) and (1,2) hold b: differ in every key column
    results = row_results(engine, rule(type="unique", column="email"), batch, keys=["shop", "id"])
    assert fails(results) == [False, False, True, True, False]


def test_unique_against_current_rows(engine: DuckDBEngine) -> None:
    current = pa.table({"id": [9, 8], "email": ["held", "mine"]})
    batch = changes({"id": [1, 8, 2], "email": ["held", "mine", "free"]})
    results = row_results(engine, rule(type="unique", column="email"), batch, current=current)
    assert results == [
        (True, "email 'held' is already used by another key"),
        (False, None),  # the same key keeps its value
        (False, None),
    ]


def test_unique_value_freed_in_the_same_batch_passes(engine: DuckDBEngine) -> None:
    # key 9 moves to another e-mail and key 8 is deleted: their current values are free
    current = pa.table({"id": [9, 8], "email": ["a", "b"]})
    batch = changes({"id": [9, 8, 1, 2], "email": ["z", None, "a", "b"]}, ops=["U", "D", "I", "I"])
    results = row_results(engine, rule(type="unique", column="email"), batch, current=current)
    assert fails(results) == [False] * 4


def test_unique_does_not_duplicate_rows(engine: DuckDBEngine) -> None:
    current = pa.table({"id": [5, 6, 7], "email": ["a", "a", "a"]})
    batch = changes({"id": [1, 1, 2], "email": ["a", "a", "a"]})
    results = row_results(engine, rule(type="unique", column="email"), batch, current=current)
    assert fails(results) == [True, True, True]


# --- accepted_values, range, regex, length --------------------------------------------------


def test_accepted_values(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4], "country": ["US", "XX", None, "XX"]}, ops="IIID")
    checked = rule(type="accepted_values", column="country", values=["US", "CA", None])
    assert row_results(engine, checked, batch) == [
        (False, None),
        (True, "country 'XX' not in accepted values (US, CA)"),
        (False, None),
        (False, None),
    ]


def test_accepted_values_of_numbers(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2], "status": [1, 3]})
    checked = rule(type="accepted_values", column="status", values=[1, 2])
    assert fails(row_results(engine, checked, batch)) == [False, True]


def test_range_bounds_are_inclusive(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4, 5, 6], "quantity": [0, 1, 10, 11, None, -3]}, "IIIIID")
    results = row_results(engine, rule(type="range", column="quantity", min=1, max=10), batch)
    assert results == [
        (True, "quantity = 0 is below min 1"),
        (False, None),
        (False, None),
        (True, "quantity = 11 is above max 10"),
        (False, None),
        (False, None),
    ]


def test_not_accepted_values_fails_listed_values_and_passes_null(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4], "country": ["US", "XX", None, "XX"]}, ops="IIID")
    checked = rule(type="not_accepted_values", column="country", values=["XX", "ZZ"])
    assert row_results(engine, checked, batch) == [
        (False, None),
        (True, "country 'XX' is one of the values not accepted (XX, ZZ)"),
        (False, None),  # NULL passes, as accepted_values lets it
        (False, None),  # deletes are never checked
    ]


def test_not_accepted_values_of_numbers(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "status": [1, 3, None]})
    checked = rule(type="not_accepted_values", column="status", values=[3, 4])
    assert fails(row_results(engine, checked, batch)) == [False, True, False]


def test_not_equal(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4], "quantity": [0, 1, None, 0]}, ops="IIID")
    checked = rule(type="not_equal", column="quantity", value=0)
    assert row_results(engine, checked, batch) == [
        (True, "quantity = 0 must not equal 0"),
        (False, None),
        (False, None),
        (False, None),
    ]
    words = changes({"id": [1, 2], "status": ["void", "paid"]})
    checked = rule(type="not_equal", column="status", value="void")
    assert fails(row_results(engine, checked, words)) == [True, False]


def test_range_exclusive_bounds_fail_the_bound_itself(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4, 5], "quantity": [0, 1, 9, 10, None]})
    strict = rule(
        type="range", column="quantity", min=0, max=10, exclusive_min=True, exclusive_max=True
    )
    assert row_results(engine, strict, batch) == [
        (True, "quantity = 0 is at or below exclusive min 0"),
        (False, None),
        (False, None),
        (True, "quantity = 10 is at or above exclusive max 10"),
        (False, None),
    ]
    # one side strict, the other inclusive
    half = rule(type="range", column="quantity", min=0, max=10, exclusive_min=True)
    assert fails(row_results(engine, half, batch)) == [True, False, False, False, False]
    weights = changes({"id": [1, 2], "weight": [0.5, 0.5000001]})
    above = rule(type="range", column="weight", min=0.5, exclusive_min=True)
    assert fails(row_results(engine, above, weights)) == [True, False]


def test_range_with_fractional_bound_on_decimals_and_doubles(engine: DuckDBEngine) -> None:
    prices = pa.array([Decimal("0.01"), Decimal("0.00")], pa.decimal128(12, 2))
    batch = changes({"id": [1, 2], "price": prices, "weight": [0.5, 0.49]})
    assert fails(row_results(engine, rule(type="range", column="price", min=0.01), batch)) == [
        False,
        True,
    ]
    assert fails(row_results(engine, rule(type="range", column="weight", min=0.5), batch)) == [
        False,
        True,
    ]


def test_regex_has_search_semantics(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "code": ["abc", "xyz", None]})
    assert fails(row_results(engine, rule(type="regex", column="code", pattern="b"), batch)) == [
        False,
        True,
        False,
    ]


def test_regex_anchored_pattern_with_backslashes(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "zip": ["12345", "1234a", "123456"]}, ops="IID")
    results = row_results(engine, rule(type="regex", column="zip", pattern=r"^\d{5}$"), batch)
    assert results == [
        (False, None),
        (True, r"zip '1234a' does not match pattern '^\d{5}$'"),
        (False, None),
    ]


def test_length_counts_characters(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3, 4, 5], "code": ["a", "ab", "héé", "abcd", None]})
    results = row_results(engine, rule(type="length", column="code", min=2, max=3), batch)
    assert results == [
        (True, "code 'a' has length 1, below min 2"),
        (False, None),
        (False, None),
        (True, "code 'abcd' has length 4, above max 3"),
        (False, None),
    ]


# --- valid_date, not_in_future ----------------------------------------------------------------


def test_valid_date_reads_strings(engine: DuckDBEngine) -> None:
    batch = changes(
        {"id": [1, 2, 3, 4, 5], "born": ["2024-02-29", "2023-02-29", "garbage", None, "x"]},
        ops="IIIID",
    )
    results = row_results(engine, rule(type="valid_date", column="born"), batch)
    assert results == [
        (False, None),
        (True, "born '2023-02-29' is not a valid date"),
        (True, "born 'garbage' is not a valid date"),
        (False, None),
        (False, None),
    ]


def test_valid_date_years_are_inclusive(engine: DuckDBEngine) -> None:
    days = [date(1900, 1, 1), date(1899, 12, 31), date(2100, 12, 31), date(2101, 1, 1)]
    batch = changes({"id": [1, 2, 3, 4], "born": pa.array(days, pa.date32())})
    checked = rule(type="valid_date", column="born", min=1900, max=2100)
    assert row_results(engine, checked, batch) == [
        (False, None),
        (True, "born 1899-12-31 is before year 1900"),
        (False, None),
        (True, "born 2101-01-01 is after year 2100"),
    ]


def test_valid_date_on_timestamps(engine: DuckDBEngine) -> None:
    stamps = [datetime(1999, 12, 31, 23, 59, tzinfo=UTC), datetime(2000, 1, 1, tzinfo=UTC)]
    batch = changes({"id": [1, 2], "at": pa.array(stamps, TS)})
    checked = rule(type="valid_date", column="at", max=1999)
    assert fails(row_results(engine, checked, batch)) == [False, True]


def test_not_in_future_to_the_microsecond(engine: DuckDBEngine) -> None:
    stamps = [NOW, NOW + MICROSECOND, None, NOW + timedelta(days=1)]
    batch = changes({"id": [1, 2, 3, 4], "placed_at": pa.array(stamps, TS)}, ops="IIID")
    results = row_results(engine, rule(type="not_in_future", column="placed_at"), batch)
    assert fails(results) == [False, True, False, False]
    reason = results[1][1]
    assert reason is not None and reason.startswith("placed_at 2024-05-01 12:00:00.000001")
    assert "is in the future" in reason


def test_not_in_future_on_dates_and_naive_timestamps(engine: DuckDBEngine) -> None:
    days = pa.array([date(2024, 5, 1), date(2024, 5, 2)], pa.date32())
    naive = pa.array([datetime(2024, 5, 1, 12), datetime(2024, 5, 1, 12, 0, 1)], pa.timestamp("us"))
    batch = changes({"id": [1, 2], "day": days, "local": naive})
    for column in ("day", "local"):
        results = row_results(engine, rule(type="not_in_future", column=column), batch)
        assert fails(results) == [False, True], column


# --- references -----------------------------------------------------------------------------


def test_references_finds_values_in_the_other_table(engine: DuckDBEngine) -> None:
    customers = pa.table({"customer_id": [10, 10, 12, None]})  # duplicates must not multiply
    batch = changes(
        {"id": [1, 2, 3, 4], "customer_id": [10, 11, None, 42]}, ops=["I", "U", "I", "D"]
    )
    results = row_results(
        engine,
        rule(type="references", column="customer_id", reference="customers.customer_id"),
        batch,
        references={"customers": customers},
    )
    assert results == [
        (False, None),
        (True, "customer_id 11 not found in customers.customer_id"),
        (False, None),
        (False, None),
    ]


def test_references_to_the_table_itself_sees_this_batch(engine: DuckDBEngine) -> None:
    current = pa.table(
        {"id": [9], "manager_id": [None]},
        schema=pa.schema({"id": pa.int64(), "manager_id": pa.int64()}),
    )
    batch = changes({"id": [1, 2, 3, 4], "manager_id": [None, 1, 9, 8]})
    results = row_results(
        engine,
        rule(type="references", column="manager_id", reference="employees.id"),
        batch,
        table="employees",
        current=current,
    )
    assert fails(results) == [False, False, False, True]


def test_references_to_an_unknown_table_says_how_to_fix_it(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1], "customer_id": [1]})
    with pytest.raises(RuleError) as caught:
        compile_for(
            engine,
            [rule(type="references", column="customer_id", reference="custmers.id")],
            batch,
            references={"customers": pa.table({"id": [1]})},
            tables=["orders", "customers"],
        )
    message = str(caught.value)
    assert message.startswith("orders: rule references(customer_id): table 'custmers'")
    assert "add it to tables:" in message and "customers" in message


# --- sql_row --------------------------------------------------------------------------------


def test_sql_row_null_result_passes(engine: DuckDBEngine) -> None:
    batch = changes(
        {"id": [1, 2, 3, 4], "quantity": [2, 1, None, 0], "price": [5, 9, 5, 0]}, ops="IIID"
    )
    checked = rule(type="sql_row", sql="quantity * price >= 10")
    assert row_results(engine, checked, batch) == [
        (False, None),
        (True, "does not satisfy quantity * price >= 10"),
        (False, None),
        (False, None),
    ]


def test_expression_fails_a_null_result_as_dbt_expression_is_true(engine: DuckDBEngine) -> None:
    batch = changes(
        {"id": [1, 2, 3, 4], "quantity": [2, 1, None, 0], "price": [5, 9, 5, 0]}, ops="IIID"
    )
    checked = rule(type="expression", sql="quantity * price >= 10")
    assert row_results(engine, checked, batch) == [
        (False, None),
        (True, "not true: quantity * price >= 10"),
        (True, "not true: quantity * price >= 10"),  # NULL is not true: the row fails
        (False, None),  # deletes are never checked
    ]
    # the expression decides what NULL means when the author wants it to pass
    lenient = rule(type="expression", sql="quantity IS NULL OR quantity * price >= 10")
    assert fails(row_results(engine, lenient, batch)) == [False, True, False, False]


def test_expression_reads_other_config_tables_as_sql_row_does(engine: DuckDBEngine) -> None:
    customers = pa.table({"customer_id": [10]})
    batch = changes({"id": [1, 2, 3], "customer_id": [10, 11, None]})
    known = "customer_id IN (SELECT c.customer_id FROM customers AS c)"
    results = row_results(
        engine, rule(type="expression", sql=known), batch, references={"customers": customers}
    )
    assert fails(results) == [False, True, True]


def test_sql_row_subquery_on_a_config_table(engine: DuckDBEngine) -> None:
    customers = pa.table({"customer_id": [10, 11], "active": [True, False]})
    batch = changes({"id": [1, 2, 3], "customer_id": [10, 11, 12]})
    checked = rule(
        type="sql_row",
        sql="customer_id IN (SELECT c.customer_id FROM customers AS c WHERE c.active)",
    )
    results = row_results(engine, checked, batch, references={"customers": customers})
    assert fails(results) == [False, True, True]


def test_sql_row_correlates_through_the_table_name(engine: DuckDBEngine) -> None:
    customers = pa.table({"customer_id": [10]})
    batch = changes({"id": [1, 2], "customer_id": [10, 11]})
    correlated = "EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = orders.customer_id)"
    results = row_results(
        engine, rule(type="sql_row", sql=correlated), batch, references={"customers": customers}
    )
    assert fails(results) == [False, True]
    # unqualified inside the subquery, customer_id is the subquery's own column (plain SQL)
    loose = "EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = customer_id)"
    results = row_results(
        engine, rule(type="sql_row", sql=loose), batch, references={"customers": customers}
    )
    assert fails(results) == [False, False]


def test_sql_row_own_table_means_current_rows(engine: DuckDBEngine) -> None:
    checked = rule(type="sql_row", sql="orders.quantity <= (SELECT max(quantity) FROM orders)")
    batch = changes({"id": [1, 2], "quantity": [5, 6]})
    current = pa.table({"id": [7], "quantity": [5]})
    assert fails(row_results(engine, checked, batch, current=current)) == [False, True]
    # first batch: no current rows, the subquery is NULL, and NULL passes
    assert fails(row_results(engine, checked, batch)) == [False, False]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("quantity >", "invalid SQL"),
        ("quantity > 0; price > 0", "one boolean expression"),
        ("SELECT 1", "invalid SQL"),
        ("quantiy > 0", "column 'quantiy' does not exist in the batch"),
        ("quantity IN (SELECT q FROM suppliers)", "table 'suppliers' is not a configured table"),
    ],
)
@pytest.mark.parametrize("kind", ["sql_row", "expression"])
def test_sql_row_problems_are_rule_errors(
    engine: DuckDBEngine, sql: str, expected: str, kind: str
) -> None:
    batch = changes({"id": [1], "quantity": [1], "price": [1]})
    with pytest.raises(RuleError, match="^orders: rule positive") as caught:
        # built past validation: config load rejects unparsable SQL already, the compiler
        # must still say what is wrong with whatever it is given
        unchecked = QualityRule.model_construct(
            type=kind, sql=sql, name="positive", action="quarantine"
        )
        compile_for(engine, [unchecked], batch)
    assert expected in str(caught.value)
    assert "\x1b" not in str(caught.value)  # no terminal codes from sqlglot's messages


def test_an_unknown_table_in_custom_sql_lists_every_configured_table(
    engine: DuckDBEngine,
) -> None:
    # only the tables a rule reads correctly are registered; the message lists all of them
    batch = changes({"id": [1], "quantity": [1]})
    unchecked = QualityRule.model_construct(
        type="sql_row", sql="id IN (SELECT order_id FROM order_itemz)", action="quarantine"
    )
    with pytest.raises(RuleError) as caught:
        compile_for(engine, [unchecked], batch, tables=["orders", "order_items", "customers"])
    assert "(configured: orders, order_items, customers)" in str(caught.value)


# --- dataset rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "passed"), [(1, False), (2, True), (3, True), (4, False)])
def test_row_count_bounds(engine: DuckDBEngine, rows: int, passed: bool) -> None:
    batch = changes({"id": list(range(rows))}, ops=["D"] + ["I"] * (rows - 1))
    result = dataset_result(engine, rule(type="row_count", min=2, max=3), batch)
    # deletes are changes too: they count toward the batch size, not toward "checked"
    assert result["passed"] is passed
    assert result["failed"] == (0 if passed else 1)
    assert result["checked"] == rows - 1
    assert result["observed"].startswith(f"{rows} rows")


@pytest.mark.parametrize(("rows", "passed"), [(7, True), (6, False)])
def test_row_count_against_recent_batches(engine: DuckDBEngine, rows: int, passed: bool) -> None:
    batch = changes({"id": list(range(rows))})
    # 0.7 * mean(5, 15) = 7 exactly; float arithmetic would say 7.000000000000001
    checked = rule(type="row_count", threshold=0.7)
    result = dataset_result(engine, checked, batch, recent=[5, 15])
    assert result["passed"] is passed
    assert dataset_result(engine, checked, batch)["passed"] is True  # no history: no bar


def test_row_count_of_an_empty_batch(engine: DuckDBEngine) -> None:
    batch = changes({"id": pa.array([], pa.int64())})
    result = dataset_result(engine, rule(type="row_count", min=1), batch)
    assert (result["checked"], result["passed"]) == (0, False)


@pytest.mark.parametrize(
    ("age", "passed"), [(timedelta(seconds=60), True), (timedelta(seconds=60) + MICROSECOND, False)]
)
def test_freshness_boundary(engine: DuckDBEngine, age: timedelta, passed: bool) -> None:
    stamps = pa.array([NOW - timedelta(hours=1), NOW - age, NOW], TS)
    batch = changes({"id": [1, 2, 3], "updated_at": stamps}, ops="IID")  # the delete is ignored
    checked = rule(type="freshness", column="updated_at", max_age_seconds=60)
    result = dataset_result(engine, checked, batch)
    assert result["passed"] is passed
    assert result["checked"] == 2


def test_freshness_passes_without_values(engine: DuckDBEngine) -> None:
    checked = rule(type="freshness", column="updated_at", max_age_seconds=60)
    empty = changes({"id": pa.array([], pa.int64()), "updated_at": pa.array([], TS)})
    nulls = changes({"id": [1], "updated_at": pa.array([None], TS)})
    for batch in (empty, nulls):
        result = dataset_result(engine, checked, batch)
        assert result["passed"] is True
        assert result["observed"].startswith("no values")


@pytest.mark.parametrize(
    ("values", "passed"), [(["a", "a", "b", None], True), (["a", "a", None], False)]
)
def test_distinct_count(engine: DuckDBEngine, values: list[str | None], passed: bool) -> None:
    batch = changes({"id": list(range(len(values))), "status": values})
    checked = rule(type="distinct_count", column="status", min=2, max=3)
    assert dataset_result(engine, checked, batch)["passed"] is passed


@pytest.mark.parametrize(("values", "passed"), [([1, 3, None], True), ([1, 4], False)])
def test_mean(engine: DuckDBEngine, values: list[int | None], passed: bool) -> None:
    batch = changes({"id": list(range(len(values))), "quantity": values})
    result = dataset_result(engine, rule(type="mean", column="quantity", min=1, max=2), batch)
    assert result["passed"] is passed


def test_mean_of_no_values_passes(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1], "quantity": pa.array([None], pa.int64())})
    assert dataset_result(engine, rule(type="mean", column="quantity", min=1), batch)["passed"]


@pytest.mark.parametrize(("values", "passed"), [([4, 6, None], True), ([5, 6], False)])
def test_sum(engine: DuckDBEngine, values: list[int | None], passed: bool) -> None:
    batch = changes({"id": list(range(len(values))), "amount": values})
    result = dataset_result(engine, rule(type="sum", column="amount", max=10), batch)
    assert result["passed"] is passed


def test_sum_of_no_values_is_zero(engine: DuckDBEngine) -> None:
    batch = changes({"id": pa.array([], pa.int64()), "amount": pa.array([], pa.int64())})
    assert dataset_result(engine, rule(type="sum", column="amount", min=0), batch)["passed"]
    assert not dataset_result(engine, rule(type="sum", column="amount", min=1), batch)["passed"]


def test_sql_dataset_counts_returned_rows(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 2, 3], "quantity": [1, 200, 300]})
    checked = rule(type="sql_dataset", sql="SELECT id FROM orders WHERE quantity > 100")
    result = dataset_result(engine, checked, batch)
    assert result == {"checked": 3, "failed": 2, "passed": False, "observed": "2 rows returned"}
    passing = rule(type="sql_dataset", sql="SELECT id FROM orders WHERE quantity > 300")
    assert dataset_result(engine, passing, batch)["passed"] is True


def test_sql_dataset_joins_other_tables_and_ctes(engine: DuckDBEngine) -> None:
    customers = pa.table({"customer_id": [10]})
    batch = changes({"id": [1, 2], "customer_id": [10, 11]})
    sql = """
        WITH orphans AS (
            SELECT o.id FROM orders AS o
            LEFT JOIN customers c ON o.customer_id = c.customer_id
            WHERE c.customer_id IS NULL
        )
        SELECT * FROM orphans
    """
    result = dataset_result(
        engine, rule(type="sql_dataset", sql=sql), batch, references={"customers": customers}
    )
    assert (result["failed"], result["passed"]) == (1, False)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT id FROM orders WHERE quantiy > 1", "column 'quantiy'"),
        ("SELECT o.quantiy FROM orders AS o", "column 'quantiy'"),
        ("SELECT id FROM orders WHERE", "invalid SQL"),
        ("quantity > 1", "single query"),
        ("SELECT * FROM shipments", "table 'shipments' is not a configured table"),
        ("SELECT * FROM shop.orders", "table 'shop.orders' is not a configured table"),
    ],
)
def test_sql_dataset_problems_are_rule_errors(
    engine: DuckDBEngine, sql: str, expected: str
) -> None:
    batch = changes({"id": [1], "quantity": [1]})
    with pytest.raises(RuleError, match="^orders: rule sql_dataset") as caught:
        unchecked = QualityRule.model_construct(type="sql_dataset", sql=sql, action="warn")
        compile_for(engine, [unchecked], batch)
    assert expected in str(caught.value)


def test_sql_dataset_allows_select_aliases(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1, 1, 2], "quantity": [1, 2, 3]})
    sql = "SELECT id, count(*) AS n FROM orders GROUP BY id HAVING n > 1"
    assert dataset_result(engine, rule(type="sql_dataset", sql=sql), batch)["failed"] == 1


# --- schema ---------------------------------------------------------------------------------

LAKE_SCHEMA = pa.schema(
    {
        "id": pa.int64(),
        "qty": pa.int32(),
        "amount": pa.decimal128(12, 2),
        "email": pa.string(),
        "placed_at": TS,
        "local_at": pa.timestamp("us"),
        "day": pa.date32(),
        "tags": pa.list_(pa.string()),
        "ratio": pa.float64(),
        "raw": pa.binary(),
        "exact": pa.string(),  # numeric without typmod stays text in the lake
        "ok": pa.bool_(),
    }
)


def test_schema_matches_postgres_type_names() -> None:
    columns = {
        "id": "bigint",
        "qty": "integer",
        "amount": "numeric(12,2)",
        "email": "varchar(200)",
        "placed_at": "timestamp with time zone",
        "local_at": "timestamp",
        "day": "date",
        "tags": "text[]",
        "ratio": "double precision",
        "raw": "bytea",
        "exact": "numeric",
        "ok": "boolean",
    }
    assert check_schema(rule(type="schema", columns=columns), LAKE_SCHEMA) == (
        True,
        "12 columns match",
    )


def test_schema_lists_every_mismatch() -> None:
    columns = {
        "id": "integer",
        "amount": "decimal(12,3)",
        "placed_at": "timestamp",
        "gone": "text",
        "email": "text",
    }
    passed, observed = check_schema(rule(type="schema", columns=columns), LAKE_SCHEMA)
    assert not passed
    assert observed == (
        "id: expected integer, found int64; amount: expected decimal(12,3), found "
        "decimal128(12, 2); placed_at: expected timestamp, found timestamp[us, tz=UTC]; "
        "gone: missing (expected text)"
    )


def test_schema_rule_is_checked_in_python(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1]})
    checks = compile_for(engine, [rule(type="schema", columns={"id": "bigint"})], batch)
    assert checks.dataset[0].query is None
    with pytest.raises(RuleError, match="^orders: rule schema\\(\\): unknown column type 'blub'"):
        compile_for(engine, [rule(type="schema", columns={"id": "blub"})], batch)


# --- compile-time errors, whole-batch behaviour, Spark ----------------------------------------


def test_unknown_column_names_table_rule_and_column(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1], "email": ["a"]})
    with pytest.raises(RuleError) as caught:
        compile_for(engine, [rule(type="not_null", column="emial")], batch)
    message = str(caught.value)
    assert message.startswith(
        "orders: rule not_null(emial): column 'emial' does not exist in the batch (columns: id, "
    )
    assert message.endswith("did you mean 'email'?")


def test_unknown_key_column_for_unique(engine: DuckDBEngine) -> None:
    batch = changes({"id": [1], "email": ["a"]})
    with pytest.raises(RuleError, match="key column 'order_id'"):
        compile_for(engine, [rule(type="unique", column="email")], batch, keys=["order_id"])


def every_rule() -> list[QualityRule]:
    return [
        rule(type="not_null", column="email"),
        rule(type="not_null", column="email", threshold=0.5),
        rule(type="unique", column="email"),
        rule(type="accepted_values", column="country", values=["US", "CA"]),
        rule(type="range", column="quantity", min=1, max=100),
        rule(type="regex", column="email", pattern=r"^[^@\s]+@[^@\s]+\.\w+$"),
        rule(type="length", column="country", min=2, max=2),
        rule(type="valid_date", column="born", min=1900, max=2100),
        rule(type="not_in_future", column="placed_at"),
        rule(type="references", column="customer_id", reference="customers.customer_id"),
        rule(
            type="sql_row",
            sql="EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = orders.customer_id) "
            "OR quantity > 0",
        ),
        rule(type="not_accepted_values", column="country", values=["XX"]),
        rule(type="not_equal", column="quantity", value=0),
        rule(type="range", column="quantity", min=0, exclusive_min=True, name="positive"),
        rule(type="expression", sql="quantity > 0 AND country <> 'XX'"),
        rule(type="row_count", min=1, max=1000, threshold=0.5),
        rule(type="freshness", column="placed_at", max_age_seconds=3600),
        rule(type="distinct_count", column="country", min=1),
        rule(type="mean", column="quantity", max=50),
        rule(type="sum", column="quantity", min=0),
        rule(type="schema", columns={"id": "bigint"}),
        rule(type="sql_dataset", sql="SELECT id FROM orders WHERE quantity < 0"),
    ]


def full_batch() -> pa.Table:
    return changes(
        {
            "id": [1, 1, 2, 3],
            "email": ["a@x.io", "a@x.io", "bad", None],
            "country": ["US", "US", "XX", None],
            "quantity": [1, 2, 0, None],
            "born": ["1990-01-01", "1990-01-01", "1990-02-30", None],
            "placed_at": pa.array([NOW, NOW, NOW + MICROSECOND, None], TS),
            "customer_id": [10, 10, 11, None],
        },
        ops=["I", "U", "I", "D"],
    )


def test_flagged_returns_exactly_the_batch(engine: DuckDBEngine) -> None:
    batch = full_batch()
    current = pa.table({"id": [5, 6], "email": ["a@x.io", "a@x.io"]})
    customers = pa.table({"customer_id": [10, 10, 10]})
    checks = compile_for(
        engine, every_rule(), batch, current=current, references={"customers": customers}
    )
    assert len(checks.row_rules) == 14 and len(checks.dataset) == 8
    out = engine.query(checks.flagged).sort_by("_seq")
    assert out.select(batch.column_names).equals(batch)
    for i in range(len(checks.row_rules)):
        assert out.column(f"_fail_{i}").null_count == 0
        # deletes never fail; a reason appears exactly when the row fails
        assert out.column(f"_fail_{i}").to_pylist()[3] is False
        for failed, reason in zip(
            out.column(f"_fail_{i}").to_pylist(), out.column(f"_reason_{i}").to_pylist()
        ):
            assert (reason is not None) == failed
    third = [out.column(f"_fail_{i}")[2].as_py() for i in range(len(checks.row_rules))]
    assert third == [False, False, True, True, True, False, True, True, True, True] + [True] * 4
    for check in checks.dataset:
        if check.query is not None:
            assert engine.query(check.query).num_rows == 1


def test_every_statement_transpiles_to_spark(engine: DuckDBEngine) -> None:
    batch = full_batch()
    checks = compile_for(
        engine,
        every_rule(),
        batch,
        current=pa.table({"id": [5], "email": ["a@x.io"]}),
        references={"customers": pa.table({"customer_id": [10]})},
        recent=[4, 4],
    )
    statements = [checks.flagged] + [c.query for c in checks.dataset if c.query is not None]
    for statement in statements:
        spark = statement.sql(dialect="spark")
        # it must parse back as Spark SQL, and use nothing DuckDB-only
        sqlglot.parse_one(spark, read="spark")
        for duckdb_only in ("REGEXP_MATCHES", "TIMESTAMPTZ", '"', "::"):
            assert duckdb_only not in spark, (duckdb_only, spark)
    flagged = checks.flagged.sql(dialect="spark")
    assert "RLIKE" in flagged and "TRY_CAST(" in flagged
    # Spark runs IN/EXISTS subqueries only in filters, and no DISTINCT window aggregates
    for select in checks.flagged.selects:
        assert select.find(exp.Exists, exp.Subquery, exp.Select) is None, select.sql()
    assert checks.flagged.find(exp.Window) is None


def test_module_docstring_examples() -> None:
    assert doctest.testmod(rules_module).failed == 0
