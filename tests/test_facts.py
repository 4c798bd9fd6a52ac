"""Event facts on DuckDB and PostgreSQL: every surrogate key is the dimension version valid at
the event (against a plain as-of lookup over the dimension the SCD2 reference model of
test_scd2 builds), every date key is the event's UTC day, and a rerun adds nothing."""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from test_scd2 import BASE, DIM, Reference, Scenario, apply, infer, reset, scenarios, warehouse

from riverbed.load.facts import (
    PlanOfParts,
    append,
    fact_ddl,
    fact_indexes,
    load_plan,
    staging_plan,
)
from riverbed.load.model import FactModel
from riverbed.load.scd2 import staging_ddl
from riverbed.load.warehouse import Warehouse

__all__ = ["warehouse"]  # the fixture, both engines

FACT = FactModel("item_events", "fact_item_events", ("event_id",), (("item_id", DIM),))
FACT_COLUMNS = {"event_id": exp.DataType.build("BIGINT"), "item_id": exp.DataType.build("BIGINT")}
SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, max_examples=30
)


def reset_facts(wh: Warehouse) -> None:
    for table in (FACT.name, FACT.staging):
        wh.execute(f"DROP TABLE IF EXISTS {table}")
    wh.execute(staging_ddl(FACT.source, FACT_COLUMNS, wh.dialect))
    wh.execute(fact_ddl(FACT, FACT_COLUMNS))


def load_facts(wh: Warehouse, events: list[tuple[int | None, dt.datetime]]) -> list[dict[str, Any]]:
    """Stage one batch of events (item, commit time) in commit order and append it as the
    loader does; the fact rows, in event order."""
    n = len(events)
    rows = pa.table(
        {
            "event_id": pa.array(range(n), pa.int64()),
            "item_id": pa.array([item for item, _ in events], pa.int64()),
            "_op": pa.array(["I"] * n),
            "_commit_ts": pa.array([at for _, at in events], pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array(range(1000, 1000 + n), pa.int64()),
            "_seq": pa.array([0] * n, pa.int64()),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )
    wh.execute(exp.delete(FACT.staging))
    wh.load_arrow(FACT.staging, rows.append_column("_batch_id", pa.array(["b1"] * n)))
    plan = PlanOfParts(["event_id"])  # as the staging load sees it, in two parts
    plan.add(rows.slice(0, n // 2))
    plan.add(rows.slice(n // 2))
    assert staging_plan(wh, FACT, ["event_id"]) == plan.plan()  # read back: the same
    append(wh, FACT, list(FACT_COLUMNS), ["b1"], plan.plan())
    return wh.query(
        f"SELECT event_id, item_key, date_key FROM {FACT.name} ORDER BY event_id"
    ).to_pylist()


def valid_at(reference: Reference, item: int | None, at: dt.datetime) -> int | None:
    """The surrogate key of the one version of ``item`` valid at ``at``, if any."""
    found = [
        r["item_key"]
        for r in reference.rows
        if r["item_id"] == item and r["effective_date"] <= at < r["expiry_date"]
    ]
    assert len(found) <= 1, f"item {item}: versions overlap at {at}"
    return found[0] if found else None


def test_fact_keys_are_the_versions_valid_at_each_event(warehouse: Warehouse) -> None:
    """Random dimension histories (changes, deletes, re-inserts, inferred members), then a fact
    batch whose events fall before, between, at and after the dimension's changes, on known,
    deleted and unknown items."""

    @SETTINGS
    @given(scenarios(), st.data())
    def check(scenario: Scenario, data: st.DataObject) -> None:
        reset(warehouse)
        reset_facts(warehouse)
        reference = Reference()
        for batch, referenced in zip(scenario.batches, scenario.inferred, strict=True):
            if referenced:
                infer(warehouse, referenced)
                reference.infer(referenced)
            apply(warehouse, batch)
            reference.apply(batch)
        events = [e for batch in scenario.batches for e in batch]
        # the last one the dimension never saw (a truncate has no key)
        items = max((e.key for e in events if e.key is not None), default=0) + 1
        last = max(e.second for e in events)
        seconds = sorted(data.draw(st.lists(st.integers(-1, last + 1), min_size=1, max_size=8)))
        facts = [
            (data.draw(st.one_of(st.integers(1, items), st.none())), BASE + dt.timedelta(seconds=s))
            for s in seconds
        ]
        got = load_facts(warehouse, facts)
        # an event whose item has no row at all gets an inferred member, valid at any time
        reference.infer([item for item, _ in facts if item is not None])
        expected = [valid_at(reference, item, at) for item, at in facts]
        assert [row["item_key"] for row in got] == expected
        # a rerun of the same batch replaces it: nothing twice, nothing else inferred
        assert load_facts(warehouse, facts) == got
        assert len(warehouse.query(f"SELECT * FROM {DIM.name}")) == len(reference.rows)

    check()


ANY_INSTANT = st.datetimes(
    min_value=dt.datetime(1960, 1, 1),
    max_value=dt.datetime(2045, 12, 31),
    timezones=st.just(dt.UTC),
)
EDGES = st.sampled_from(
    [
        dt.datetime(year, month, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=step)
        for year in (1969, 1970, 2024, 2025)
        for month in (1, 2, 3, 12)
        for step in (-1, 0, 1)  # the last and first microsecond of a month
    ]
)
# a batch: events spread over decades, or over a few weeks around some instant (the common
# case), often around a month's first microsecond or before 1970
BATCHES = st.one_of(
    st.lists(ANY_INSTANT, min_size=1, max_size=12),
    st.builds(
        lambda centre, offsets: [centre + dt.timedelta(seconds=s) for s in offsets],
        st.one_of(ANY_INSTANT, EDGES),
        st.lists(st.integers(-40 * 86_400, 40 * 86_400), min_size=1, max_size=12),
    ),
)


def test_date_keys_are_the_utc_day_of_each_event(warehouse: Warehouse) -> None:
    """Batches spanning a day, months, years (more months than the per-month shortcut takes)
    or reaching before 1970: the date key is always yyyymmdd of the event's UTC day."""
    reset(warehouse)

    @SETTINGS
    @given(BATCHES)
    @example([dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)])
    @example(
        [
            dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC),
            dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        ]
    )
    def check(instants: list[dt.datetime]) -> None:
        reset_facts(warehouse)
        events = [(1, at) for at in sorted(instants)]
        got = [row["date_key"] for row in load_facts(warehouse, events)]
        assert got == [int(at.strftime("%Y%m%d")) for _, at in events]

    check()


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 5)), max_size=12),
    st.lists(st.integers(0, 12), max_size=4),
)
def test_a_plan_seen_part_by_part_is_the_plan_of_the_whole(
    keys: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    """The load order and window the staging load records, part by part, are those of all
    its rows at once: sorted parts out of order with each other, equal keys at the seams."""
    rows = pa.table(
        {
            "k": pa.array([k for k, _, _ in keys], pa.int64()),
            "_lsn": pa.array([lsn for _, lsn, _ in keys], pa.int64()),
            "_seq": pa.array([seq for _, _, seq in keys], pa.int64()),
            "_commit_ts": pa.array(
                [BASE + dt.timedelta(seconds=s) for _, _, s in keys], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    plan = PlanOfParts(["k"])
    bounds = [0, *sorted(c for c in cuts if c < len(keys)), len(keys)]
    for start, end in zip(bounds, bounds[1:]):
        plan.add(rows.slice(start, end - start))
    assert plan.plan() == load_plan(rows, ["k"])
    assert PlanOfParts.from_json(plan.to_json()) == plan.plan()


def test_an_append_leaves_no_range_of_batch_ids_unsummarised(warehouse: Warehouse) -> None:
    """PostgreSQL: the next append's preaction and checks find their batch by the BRIN index on
    batch_id; a block range autovacuum has not summarised yet would match every batch and be
    read in full, after a bulk load the whole table."""
    if not warehouse.has_indexes:
        pytest.skip("DuckDB prunes by its zone maps, kept as it writes")
    reset(warehouse)
    reset_facts(warehouse)
    for index in fact_indexes(FACT, ["event_id"], None):
        warehouse.execute(index)
    load_facts(warehouse, [(None, BASE + dt.timedelta(seconds=s)) for s in range(30_000)])
    left = warehouse.query(
        f"SELECT brin_summarize_new_values('{FACT.name}_batch_id_brin') AS n"
    ).column("n")
    assert left[0].as_py() == 0


def test_a_truncated_and_reloaded_table_is_planned_by_its_new_rows(warehouse: Warehouse) -> None:
    """After ``analyze``, the planner counts the rows a staging table holds now, not those
    deleted by the truncate-and-load before: it sizes the fact append's key join by them."""
    reset_facts(warehouse)
    for rows in (20_000, 10):
        staged = pa.table(
            {
                "event_id": pa.array(range(rows), pa.int64()),
                "item_id": pa.array(range(rows), pa.int64()),
                "_op": pa.array(["I"] * rows),
                "_commit_ts": pa.array([BASE] * rows, pa.timestamp("us", tz="UTC")),
                "_lsn": pa.array(range(rows), pa.int64()),
                "_seq": pa.array([0] * rows, pa.int64()),
                "_toast_unchanged": pa.nulls(rows, pa.string()),
                "_batch_id": pa.array(["b"] * rows),
            }
        )
        with warehouse.transaction():
            warehouse.execute(exp.delete(FACT.staging))
            warehouse.load_arrow(FACT.staging, staged)
        warehouse.analyze(FACT.staging)
    plan = "\n".join(
        str(value)
        for row in warehouse.query(f"EXPLAIN SELECT * FROM {FACT.staging}").to_pylist()
        for value in row.values()
    )
    estimates = [int(n.replace(",", "")) for n in re.findall(r"(?:~|rows=)([\d,]+)", plan)]
    assert estimates and max(estimates) < 1_000, plan


def test_a_batch_far_smaller_than_its_dimension_lands_in_load_order(warehouse: Warehouse) -> None:
    """DuckDB hashes the smaller side of the key join: for a batch far smaller than its
    dimension, the staged rows, which a join emits in the dimension's order. The rows still
    land in load order (what keeps the sort key's zone maps tight), with the same keys."""
    if warehouse.has_indexes:
        pytest.skip("PostgreSQL: order within a load serves none of the loader's indexes")
    reset(warehouse)
    reset_facts(warehouse)
    warehouse.execute(
        f"INSERT INTO {DIM.name} (item_key, item_id, effective_date, expiry_date,"
        " is_current_record, is_deleted, is_inferred, _lsn, _seq)"
        " SELECT i + 1, i, TIMESTAMPTZ '2000-01-01 00:00:00+00',"
        " TIMESTAMPTZ '9999-12-31 00:00:00+00', true, false, false, i, 0"
        " FROM range(200000) AS r(i)"
    )
    items = random.Random(5).choices(range(200_000), k=3_000)
    rows = load_facts(warehouse, [(item, BASE + dt.timedelta(seconds=1)) for item in items])
    assert [r["item_key"] for r in rows] == [item + 1 for item in items]
    stored = warehouse.query(f"SELECT event_id FROM {FACT.name} ORDER BY rowid").column(0)
    assert stored.to_pylist() == list(range(len(items)))


def test_a_load_that_fails_says_why(warehouse: Warehouse) -> None:
    # DuckDB: unregistering the loaded rows in the transaction the failure aborted once hid
    # the failure behind "the transaction is aborted"
    warehouse.execute("DROP TABLE IF EXISTS narrow")
    warehouse.execute("CREATE TABLE narrow (a INTEGER)")
    with pytest.raises(Exception, match=r"(?i)out of range"), warehouse.transaction():
        warehouse.load_arrow("narrow", pa.table({"a": pa.array([5_000_000_000], pa.int64())}))
    warehouse.load_arrow("narrow", pa.table({"a": pa.array([5], pa.int64())}))
    assert warehouse.query("SELECT a FROM narrow").to_pylist() == [{"a": 5}]
