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

from riverbed.load.fact_current import LeftOut, current_view_ddl
from riverbed.load.facts import (
    PlanOfParts,
    append,
    append_statements,
    fact_ddl,
    fact_indexes,
    load_plan,
    staging_plan,
)
from riverbed.load.model import FactModel
from riverbed.load.scd2 import staging_ddl
from riverbed.load.warehouse import Warehouse, capabilities

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
    """The surrogate key of the one version of ``item`` valid at ``at``; for an instant
    before every version of the item (zero-length ones too), its first version of non-zero
    length; else (a gap after a delete, no row at all) none."""
    versions = [r for r in reference.rows if r["item_id"] == item]
    found = [r["item_key"] for r in versions if r["effective_date"] <= at < r["expiry_date"]]
    assert len(found) <= 1, f"item {item}: versions overlap at {at}"
    if found:
        return found[0]
    lasting = [r for r in versions if r["effective_date"] < r["expiry_date"]]
    first = min(lasting, key=lambda r: r["effective_date"], default=None)
    if first is not None and all(at < r["effective_date"] for r in versions):
        return int(first["item_key"])
    return None


def test_fact_keys_are_the_versions_valid_at_each_event(warehouse: Warehouse) -> None:
    """Random dimension histories (changes, deletes, re-inserts, inferred members), then a fact
    batch whose events fall before, between, at and after the dimension's changes, on known,
    deleted and unknown items: an event before an item's first version takes that version."""

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
    """Both engines hash the smaller side of the key join: for a batch far smaller than its
    dimension, the staged rows, which a join emits in the dimension's order. The rows still
    land in load order (what keeps DuckDB's zone maps on the sort key tight, and what lets
    PostgreSQL's B-trees take them at their right edge), with the same keys."""
    reset(warehouse)
    reset_facts(warehouse)
    warehouse.execute(
        f"INSERT INTO {DIM.name} (item_key, item_id, effective_date, expiry_date,"
        " is_current_record, is_deleted, is_inferred, _lsn, _seq)"
        " SELECT i + 1, i, TIMESTAMPTZ '2000-01-01 00:00:00+00',"
        " TIMESTAMPTZ '9999-12-31 00:00:00+00', true, false, false, i, 0"
        f" FROM {'range(200000)' if warehouse.name == 'duckdb' else 'generate_series(0, 199999)'}"
        " AS r(i)"
    )
    warehouse.analyze(DIM.name)
    if warehouse.name == "postgres":
        # too little memory for either side's hash in one batch: a plan that keeps no order
        warehouse.execute("SET work_mem TO '64kB'")
    items = random.Random(5).choices(range(200_000), k=3_000)
    rows = load_facts(warehouse, [(item, BASE + dt.timedelta(seconds=1)) for item in items])
    assert [r["item_key"] for r in rows] == [item + 1 for item in items]
    position = capabilities(warehouse.dialect).row_position
    stored = warehouse.query(f"SELECT event_id FROM {FACT.name} ORDER BY {position}").column(0)
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


# --- the current-state view and the changes an append leaves out -------------------------

ORDERS = FactModel("orders", "fact_orders", ("order_id",), ())
ORDER_COLUMNS = {
    "order_id": exp.DataType.build("BIGINT"),
    "amount": exp.DataType.build("BIGINT"),
    "note": exp.DataType.build("TEXT"),
}
Change = tuple[str, int | None, int | None, str | None]  # _op, order_id, amount, note


def reset_orders(wh: Warehouse) -> None:
    wh.execute(f"DROP VIEW IF EXISTS {ORDERS.view}")
    for table in (ORDERS.name, ORDERS.staging):
        wh.execute(f"DROP TABLE IF EXISTS {table}")
    wh.execute(staging_ddl(ORDERS.source, ORDER_COLUMNS, wh.dialect))
    wh.execute(fact_ddl(ORDERS, ORDER_COLUMNS))
    for index in fact_indexes(ORDERS, [], None) if wh.has_indexes else []:
        wh.execute(index)
    wh.execute(current_view_ddl(ORDERS, list(wh.columns(ORDERS.name) or {})))


def append_orders(wh: Warehouse, batch_id: str, changes: list[tuple[int, Change]]) -> LeftOut:
    """Stage one batch of (position, change) and append it as the loader does."""
    n = len(changes)
    rows = pa.table(
        {
            "order_id": pa.array([c[1] for _, c in changes], pa.int64()),
            "amount": pa.array([c[2] for _, c in changes], pa.int64()),
            "note": pa.array([c[3] for _, c in changes], pa.string()),
            "_op": pa.array([c[0] for _, c in changes]),
            "_commit_ts": pa.array([BASE] * n, pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array([lsn for lsn, _ in changes], pa.int64()),
            "_seq": pa.array([0] * n, pa.int64()),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )
    wh.execute(exp.delete(ORDERS.staging))
    wh.load_arrow(ORDERS.staging, rows.append_column("_batch_id", pa.array([batch_id] * n)))
    return append(wh, ORDERS, list(ORDER_COLUMNS), [batch_id], load_plan(rows, []))


def current(wh: Warehouse) -> dict[int, tuple[int | None, str | None]]:
    got = wh.query(f"SELECT order_id, amount, note FROM {ORDERS.view}").to_pylist()
    assert len(got) == len({r["order_id"] for r in got}), "a key twice in the view"
    return {r["order_id"]: (r["amount"], r["note"]) for r in got}


def view_sum(wh: Warehouse) -> int:
    return int(wh.query(f"SELECT COALESCE(SUM(amount), 0) AS s FROM {ORDERS.view}")[0][0].as_py())


class Source:
    """The source table the changes come from, and what the append should leave out."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[int | None, str | None]] = {}
        self.left = {"unchanged_updates": 0, "deletes_without_key": 0}

    def apply(self, change: Change) -> None:
        op, key, amount, note = change
        if op == "T":
            self.rows.clear()
        elif op == "D":
            if self.rows.pop(key, None) is None:  # type: ignore[arg-type]
                self.left["deletes_without_key"] += 1
        else:
            assert key is not None
            if op == "U" and self.rows.get(key) == (amount, note):
                self.left["unchanged_updates"] += 1
            self.rows[key] = (amount, note)


VALUES = st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.sampled_from([None, "a", "b"]))


@st.composite
def histories(draw: st.DrawFn) -> list[list[Change]]:
    """Batches of source changes: inserts of new keys, updates (often to the same values) and
    deletes of live keys, truncates, snapshot rows, and deletes of keys the warehouse never
    saw (an insert quarantined)."""
    live: set[int] = set()
    batches: list[list[Change]] = []
    for _ in range(draw(st.integers(1, 4))):
        batch: list[Change] = []
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(["I", "U", "U", "D", "T", "L", "lone D"]))
            if kind in ("U", "D") and not live:
                kind = "I"
            if kind == "T":
                batch.append(("T", None, None, None))
                live.clear()
            elif kind == "lone D":
                batch.append(("D", 100 + draw(st.integers(0, 3)), None, None))
            elif kind in ("U", "D"):
                key = draw(st.sampled_from(sorted(live)))
                if kind == "D":
                    live.discard(key)
                batch.append((kind, key, *draw(VALUES)) if kind == "U" else ("D", key, None, None))
            else:
                key = draw(st.integers(0, 5).filter(lambda k: k not in live))
                live.add(key)
                batch.append((kind, key, *draw(VALUES)))
        batches.append(batch)
    return batches


def test_the_current_view_reads_like_the_source(warehouse: Warehouse) -> None:
    """Inserts, updates (many changing nothing), deletes, truncates, deletes of keys never
    loaded: after every batch the view holds the source's rows, one per key, and its sum is
    the source's; the append left out exactly the updates that changed nothing and the deletes
    without a key. A rerun of a batch and a reprocess (the last batches withdrawn, appended
    again) leave the view as it was."""

    @SETTINGS
    @given(histories(), st.integers(0, 3))
    def check(batches: list[list[Change]], withdraw: int) -> None:
        reset_orders(warehouse)
        source = Source()
        left = {"unchanged_updates": 0, "deletes_without_key": 0}
        positioned: list[list[tuple[int, Change]]] = []
        lsn = 1000
        for index, batch in enumerate(batches):
            changes = []
            for change in batch:
                lsn += 1
                changes.append((lsn, change))
                source.apply(change)
            positioned.append(changes)
            for name, count in append_orders(warehouse, f"b{index}", changes).as_dict().items():
                left[name] += count
            assert current(warehouse) == source.rows
        assert left == source.left
        assert view_sum(warehouse) == sum(a or 0 for a, _ in source.rows.values())
        # a rerun of the last batch: its rows replaced, compared with what came before them
        append_orders(warehouse, f"b{len(batches) - 1}", positioned[-1])
        assert current(warehouse) == source.rows
        # reprocess: the last batches withdrawn as the loader does, then appended again
        withdrawn = [f"b{i}" for i in range(max(0, len(batches) - withdraw), len(batches))]
        if withdrawn:
            ids = ", ".join(f"'{b}'" for b in withdrawn)
            warehouse.execute(f"DELETE FROM {ORDERS.name} WHERE batch_id IN ({ids})")
            for batch_id in withdrawn:
                append_orders(warehouse, f"r{batch_id}", positioned[int(batch_id[1:])])
        assert current(warehouse) == source.rows

    check()


def test_a_bulk_update_that_changes_nothing_appends_nothing(warehouse: Warehouse) -> None:
    """``UPDATE orders SET note = note``: every key's first update, its previous version in the
    warehouse (a NULL equal to NULL), and again in the same batch."""
    reset_orders(warehouse)
    keys = range(2_000)
    inserts = [(1 + k, ("I", k, k, None if k % 2 else "x")) for k in keys]
    append_orders(warehouse, "b1", inserts)
    noop = [(10_000 + k, ("U", k, k, None if k % 2 else "x")) for k in keys]
    again = [(20_000 + k, ("U", k, k, None if k % 2 else "x")) for k in keys]
    left = append_orders(warehouse, "b2", [*noop, *again])
    assert left == LeftOut(unchanged_updates=4_000)
    count = warehouse.query(f"SELECT COUNT(*) AS n FROM {ORDERS.name}")[0][0].as_py()
    assert count == len(keys)
    assert view_sum(warehouse) == sum(keys)
    # one real change among them is appended, and counted once in the sum
    left = append_orders(warehouse, "b3", [(30_000, ("U", 7, 70, "x")), (30_001, ("U", 8, 8, "x"))])
    assert left == LeftOut(unchanged_updates=1)
    assert view_sum(warehouse) == sum(keys) - 7 + 70


def test_a_lone_delete_is_counted_and_not_appended(warehouse: Warehouse) -> None:
    """A delete of a key whose insert never loaded (quarantined, or before the snapshot)."""
    reset_orders(warehouse)
    append_orders(warehouse, "b1", [(1, ("I", 1, 5, None))])
    left = append_orders(warehouse, "b2", [(2, ("D", 99, None, None)), (3, ("D", 1, None, None))])
    assert left == LeftOut(deletes_without_key=1)
    ops = warehouse.query(f"SELECT _op, order_id FROM {ORDERS.name} ORDER BY _lsn").to_pylist()
    assert ops == [{"_op": "I", "order_id": 1}, {"_op": "D", "order_id": 1}]
    assert current(warehouse) == {}


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_a_batch_of_a_few_months_keys_its_dates_without_calendar_functions(dialect: str) -> None:
    """The date key of a batch spanning a few months is its UTC day number plus a constant per
    month: on PostgreSQL a DATE difference, where EXTRACT made a numeric of each field."""
    window = (BASE, BASE + dt.timedelta(days=70))
    insert = append_statements(FACT, list(FACT_COLUMNS), ["b"], [], dialect, window)[1]
    text = insert.sql(dialect=dialect).upper()
    assert "EXTRACT" not in text
    assert "DATE_PART" not in text
