"""Facts dated by business time (a fact's ``event_time``), on DuckDB and PostgreSQL.

The rules (BUSINESS_TIME.md): an event's time is its ``event_time`` column read as an instant
(a naive timestamp as UTC, a date as its midnight UTC), its commit time where that is NULL, and
always its commit time for a delete. It is the row's ``event_ts``, its ``date_key`` and the
instant its dimension keys are resolved as of; an event earlier than every version of its key
takes the key's first version (the earliest non-empty one), one in a gap after a delete stays
NULL, a key with no row gets an inferred member. Without event_time nothing changes.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from test_scd2 import (
    BASE,
    BUSINESS_PER_CHANGE,
    DIM,
    PER_CHANGE,
    Event,
    Reference,
    Scenario,
    apply,
    at,
    infer,
    reset,
    values,
    warehouse,
)
from test_scd2_business_time import business_scenarios

from riverbed.config.tables import TableConfig
from riverbed.errors import ConfigError
from riverbed.load.ddl import check_business_time
from riverbed.load.facts import PlanOfParts, append, fact_ddl, load_plan, staging_plan
from riverbed.load.model import FactModel
from riverbed.load.scd2 import staging_ddl
from riverbed.load.warehouse import Warehouse

__all__ = ["warehouse"]  # the fixture, both engines

FACT = FactModel(
    "item_events", "fact_item_events", ("event_id",), (("item_id", DIM),), event_time="happened"
)
PLAIN = FactModel("item_events", "fact_item_events", ("event_id",), (("item_id", DIM),))
ARROW = {  # the staged happened column, by its SQL type
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
}
Row = tuple[str, int, int | None, Any, int]  # _op, event_id, item_id, happened, commit second


def staged_as(kind: str, instant: dt.datetime | None) -> Any:
    """``instant`` as a column of SQL type ``kind`` stages it (a date: its UTC day)."""
    if instant is None or kind == "TIMESTAMPTZ":
        return instant
    naive = instant.astimezone(dt.UTC).replace(tzinfo=None)
    return naive.date() if kind == "DATE" else naive


def columns(kind: str) -> dict[str, exp.DataType]:
    return {
        "event_id": exp.DataType.build("BIGINT"),
        "item_id": exp.DataType.build("BIGINT"),
        "amount": exp.DataType.build("BIGINT"),
        "happened": exp.DataType.build(kind),
    }


def reset_facts(wh: Warehouse, fact: FactModel, kind: str = "TIMESTAMPTZ") -> None:
    for table in (fact.name, fact.staging):
        wh.execute(f"DROP TABLE IF EXISTS {table}")
    wh.execute(staging_ddl(fact.source, columns(kind), wh.dialect))
    wh.execute(fact_ddl(fact, columns(kind)))


def load(
    wh: Warehouse, fact: FactModel, batch_id: str, rows: list[Row], kind: str = "TIMESTAMPTZ"
) -> list[dict[str, Any]]:
    """Stage ``rows`` as one batch (in source order) and append it as the loader does; the
    fact's rows, by event_id then position."""
    n = len(rows)
    staged = pa.table(
        {
            "event_id": pa.array([r[1] for r in rows], pa.int64()),
            "item_id": pa.array([r[2] for r in rows], pa.int64()),
            "amount": pa.array([r[4] for r in rows], pa.int64()),  # an update changes it
            "happened": pa.array([r[3] for r in rows], ARROW[kind]),
            "_op": pa.array([r[0] for r in rows]),
            "_commit_ts": pa.array([at(r[4]) for r in rows], pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array([1000 * int(batch_id[1:]) + i for i in range(n)], pa.int64()),
            "_seq": pa.array([0] * n, pa.int64()),
            "_toast_unchanged": pa.nulls(n, pa.string()),
        }
    )
    wh.execute(exp.delete(fact.staging))
    wh.load_arrow(fact.staging, staged.append_column("_batch_id", pa.array([batch_id] * n)))
    plan = load_plan(staged, [], fact.event_time)  # as the staging load sees it
    assert staging_plan(wh, fact, []) == plan  # read back: the same
    append(wh, fact, list(columns(kind)), [batch_id], plan)
    got = wh.query(
        f"SELECT event_id, _op, item_key, date_key, event_ts FROM {fact.name}"
        " ORDER BY event_id, _lsn"
    ).to_pylist()
    for row in got:
        row["event_ts"] = row["event_ts"].astimezone(dt.UTC)
    return got


def dated(got: list[dict[str, Any]]) -> list[tuple[int, str, dt.datetime, int]]:
    return [(r["event_id"], r["_op"], r["event_ts"], r["date_key"]) for r in got]


def day(instant: dt.datetime) -> int:
    return int(instant.strftime("%Y%m%d"))


@pytest.mark.parametrize("kind", list(ARROW))
def test_event_ts_and_date_key_come_from_the_business_column(
    warehouse: Warehouse, kind: str
) -> None:
    """Business times years before and months after the commit times (so a window of commit
    times would key dates by the wrong months); a NULL one, a delete's (which carries one
    here, ignored) and an update's; snapshot rows dated like inserts."""

    def read(instant: dt.datetime) -> dt.datetime:  # what the warehouse makes of it
        return instant if kind != "DATE" else instant.replace(hour=0, minute=0, second=0)

    times = {
        1: dt.datetime(2019, 6, 30, 23, 30, tzinfo=dt.UTC),
        2: dt.datetime(2024, 5, 1, 0, 0, 1, tzinfo=dt.UTC),
        4: dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        5: dt.datetime(2021, 2, 28, 12, tzinfo=dt.UTC),
    }
    reset(warehouse)
    reset_facts(warehouse, FACT, kind)
    first = [
        ("I", 1, None, staged_as(kind, times[1]), 10),
        ("I", 2, None, staged_as(kind, times[2]), 10),
        ("I", 3, None, None, 11),  # NULL: its commit time
        ("L", 4, None, staged_as(kind, times[4]), 12),  # a snapshot row, backfilled before 1970
    ]
    got = load(warehouse, FACT, "b1", first, kind)
    expected = [
        (1, "I", read(times[1]), day(times[1])),
        (2, "I", read(times[2]), day(times[2])),
        (3, "I", at(11), day(at(11))),
        (4, "L", read(times[4]), day(times[4])),
    ]
    assert dated(got) == expected
    second = [
        ("U", 1, None, staged_as(kind, times[5]), 20),  # an update: its own business time
        ("D", 2, None, staged_as(kind, times[1]), 86_400 * 40),  # a delete: its commit time
    ]
    got = load(warehouse, FACT, "b2", second, kind)
    assert dated(got) == [
        expected[0],
        (1, "U", read(times[5]), day(times[5])),
        expected[1],
        (2, "D", at(86_400 * 40), 20240210),
        *expected[2:],
    ]


def test_without_event_time_every_event_is_dated_by_its_commit_time(warehouse: Warehouse) -> None:
    reset(warehouse)
    apply(warehouse, [Event(1, "I", 10, 100, 1, values(name="a"))])
    apply(warehouse, [Event(1, "U", 100, 200, 1, values(name="b"))])
    reset_facts(warehouse, PLAIN)
    happened = dt.datetime(2019, 6, 30, tzinfo=dt.UTC)  # staged, but no event_time names it
    got = load(warehouse, PLAIN, "b1", [("I", 1, 1, happened, 50), ("I", 2, 1, happened, 150)])
    assert dated(got) == [(1, "I", at(50), day(at(50))), (2, "I", at(150), day(at(150)))]
    assert [r["item_key"] for r in got] == [1, 2]  # as of the commit time


def test_dimension_keys_resolve_as_of_the_business_time(warehouse: Warehouse) -> None:
    """Item 1: a [10, 100), b [100, ...). Item 2: c [10, 50), deleted, d from 200. Item 4: a
    zero-length first version [10, 10), then f. Item 5: g [10, 20), deleted. Item 6: inserted
    and deleted in one transaction, [10, 10) deleted, then h from 30. Item 3: no row. Every
    fact is committed long after, at 1000."""
    reset(warehouse)
    batches = [
        [Event(k, "I", 10, 100, k, values(name=n)) for k, n in ((1, "a"), (2, "c"), (5, "g"))],
        [
            Event(4, "I", 10, 110, 1, values(name="e")),
            Event(4, "U", 10, 110, 2, values(name="f")),  # per_change: e is [10, 10)
            Event(6, "I", 10, 110, 3, values(name="x")),
            Event(6, "D", 10, 110, 4),  # per_change: x is [10, 10), deleted
        ],
        [Event(5, "D", 20, 150, 1)],
        [Event(2, "D", 50, 200, 1)],
        [Event(1, "U", 100, 300, 1, values(name="b"))],
        [Event(2, "I", 200, 400, 1, values(name="d"))],
        [Event(6, "I", 30, 500, 1, values(name="h"))],
    ]
    for batch in batches:
        apply(warehouse, batch, dim=PER_CHANGE)
    version = {
        r["name"]: r["item_key"]
        for r in warehouse.query(f"SELECT name, item_key FROM {DIM.name}").to_pylist()
    }
    reset_facts(warehouse, FACT)
    cases = [
        (1, 5, "a"),  # before the item's first version: that version
        (1, 10, "a"),
        (1, 99, "a"),
        (1, 100, "b"),
        (1, None, "b"),  # NULL: its commit time, 1000
        (2, 5, "c"),
        (2, 49, "c"),
        (2, 50, None),  # in the gap after the delete
        (2, 199, None),
        (2, 200, "d"),
        (4, 5, "f"),  # the first version of non-zero length
        (4, 10, "f"),
        (5, 30, None),  # after its only version, deleted: no inferred member either
        (5, 1, "g"),
        (6, 5, "h"),  # before every version of the item: its first of non-zero length
        (6, 10, None),  # from its delete to its re-insert: a gap after a delete
        (6, 29, None),
        (6, 30, "h"),
    ]
    rows: list[Row] = [
        ("I", i, item, None if s is None else at(s), 1000) for i, (item, s, _) in enumerate(cases)
    ]
    rows.append(("I", len(cases), 3, at(5), 1000))  # no row at all: an inferred member
    got = load(warehouse, FACT, "b1", rows)
    assert [r["item_key"] for r in got[: len(cases)]] == [
        None if name is None else version[name] for _, _, name in cases
    ]
    (inferred,) = warehouse.query(
        f"SELECT item_key, is_inferred, effective_date FROM {DIM.name} WHERE item_id = 3"
    ).to_pylist()
    assert inferred["is_inferred"] and inferred["effective_date"].year == 1900
    assert got[-1]["item_key"] == inferred["item_key"]
    assert warehouse.query(f"SELECT count(*) AS n FROM {DIM.name}")[0][0].as_py() == 10


def expected_key(reference: Reference, item: int | None, instant: dt.datetime) -> int | None:
    """The version of ``item`` valid at ``instant``; earlier than every version of the item
    (zero-length ones too: each is a version), its first version of non-zero length; else (a
    gap after a delete, no row) none."""
    versions = [r for r in reference.rows if r["item_id"] == item]
    lasting = [r for r in versions if r["effective_date"] < r["expiry_date"]]
    valid = [r for r in lasting if r["effective_date"] <= instant < r["expiry_date"]]
    assert len(valid) <= 1, f"item {item}: versions overlap at {instant}"
    if valid:
        return int(valid[0]["item_key"])
    first = min(lasting, key=lambda r: r["effective_date"], default=None)
    if first is not None and all(instant < r["effective_date"] for r in versions):
        return int(first["item_key"])
    return None


def test_fact_keys_are_the_versions_valid_at_each_business_time(warehouse: Warehouse) -> None:
    """A dimension with business-time versions (zero-length ones, deletes, re-inserts,
    inferred members), then facts with random business times (NULL, before, between, at and
    after the versions) committed at random times, on known, deleted and unknown items."""

    @settings(
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
        max_examples=30 if warehouse.name == "duckdb" else 12,
    )
    @given(business_scenarios(), st.data())
    def check(scenario: Scenario, data: st.DataObject) -> None:
        reset(warehouse, BUSINESS_PER_CHANGE)
        reference = Reference("per_change", business=True)
        for batch, referenced in zip(scenario.batches, scenario.inferred, strict=True):
            if referenced:
                infer(warehouse, referenced)
                reference.infer(referenced)
            apply(warehouse, batch, dim=BUSINESS_PER_CHANGE)
            reference.apply(batch)
        events = [e for batch in scenario.batches for e in batch]
        items = max((e.key for e in events if e.key is not None), default=0) + 1
        last = max(e.second for e in events) + 2
        seconds = st.integers(-4, last)
        facts = data.draw(
            st.lists(
                st.tuples(
                    st.one_of(st.integers(1, items), st.none()),
                    st.one_of(seconds, st.none()),
                    seconds,
                ),
                min_size=1,
                max_size=8,
            )
        )
        reset_facts(warehouse, FACT)
        rows: list[Row] = [
            ("I", i, item, None if s is None else at(s), commit)
            for i, (item, s, commit) in enumerate(facts)
        ]
        got = load(warehouse, FACT, "b1", rows)
        times = [at(commit if s is None else s) for _, s, commit in facts]
        assert [r["event_ts"] for r in got] == times
        assert [r["date_key"] for r in got] == [day(t) for t in times]
        reference.infer([item for item, _, _ in facts if item is not None])
        expected = [expected_key(reference, item, t) for (item, _, _), t in zip(facts, times)]
        assert [r["item_key"] for r in got] == expected
        assert load(warehouse, FACT, "b1", rows) == got  # a rerun: the same rows
        assert len(warehouse.query(f"SELECT * FROM {DIM.name}")) == len(reference.rows)

    check()


@pytest.mark.parametrize(
    "staged,says",
    [
        ({}, "'happened' is not a column of item_events as staged"),
        ({"happened": "TEXT"}, "happened is TEXT, not a date or timestamp"),
        ({"happened": "BIGINT"}, "happened is BIGINT, not a date or timestamp"),
    ],
)
def test_an_event_time_not_staged_or_not_a_time_is_refused_naming_the_key(
    staged: dict[str, str], says: str
) -> None:
    cfg = TableConfig(kind="fact", target=FACT.name, keys=["event_id"], event_time="happened")
    plain = {name: kind for name, kind in columns("DATE").items() if name != "happened"}
    kinds = {**plain, **{name: exp.DataType.build(kind) for name, kind in staged.items()}}
    with pytest.raises(ConfigError) as caught:
        check_business_time("item_events", cfg, kinds)
    (problem,) = caught.value.problems
    assert re.match(r"tables\.item_events\.event_time: " + re.escape(says), problem), problem
    for kind in ARROW:  # a date or timestamp passes
        check_business_time("item_events", cfg, columns(kind))


@pytest.mark.parametrize(
    "instants",
    [
        [  # more months than the per-month date key shortcut takes, and before 1970
            dt.datetime(1965, 3, 1, tzinfo=dt.UTC) - dt.timedelta(microseconds=1),
            dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.UTC),
            dt.datetime(2031, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ],
        [  # a few months, years before the commit times (the shortcut's case)
            dt.datetime(2019, 6, 30, 23, 59, 59, 999_999, tzinfo=dt.UTC),
            dt.datetime(2019, 7, 1, tzinfo=dt.UTC),
            dt.datetime(2019, 9, 15, 12, tzinfo=dt.UTC),
        ],
    ],
    ids=["decades", "months"],
)
def test_each_date_key_is_the_utc_day_of_its_business_time(
    warehouse: Warehouse, instants: list[dt.datetime]
) -> None:
    """Every commit time is in January 2024, every business time elsewhere."""
    reset(warehouse)
    reset_facts(warehouse, FACT)
    got = load(warehouse, FACT, "b1", [("I", i, None, t, 10) for i, t in enumerate(instants)])
    assert [r["date_key"] for r in got] == [day(t) for t in instants]
    assert [r["event_ts"] for r in got] == instants
    assert BASE.year == 2024


@pytest.mark.parametrize("kind", list(ARROW))
def test_a_batch_window_spans_its_event_times_part_by_part(kind: str) -> None:
    """The window a batch's date keys and key join are planned by is its first and last event
    time (business time, NULL and deletes at their commit time), seen part by part as the
    staging load sees it, and kept with the column it came from."""
    business = [
        dt.datetime(2019, 6, 30, 12, tzinfo=dt.UTC),
        None,
        dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
        None,
    ]
    ops = ["I", "I", "D", "L"]
    if kind == "DATE":
        business[0] = dt.datetime(2019, 6, 30, tzinfo=dt.UTC)  # read as its midnight
    staged = pa.table(
        {
            "happened": pa.array([staged_as(kind, b) for b in business], ARROW[kind]),
            "_op": pa.array(ops),
            "_commit_ts": pa.array([at(s) for s in (10, 20, 30, 5)], pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array(range(4), pa.int64()),
            "_seq": pa.array([0] * 4, pa.int64()),
        }
    )
    plan = PlanOfParts([], "happened")
    plan.add(staged.slice(0, 1))
    plan.add(staged.slice(1))
    got = plan.plan()
    # the delete's business time (2001) is not its time; the NULL falls back to 20
    assert got.window == (business[0], at(30))
    assert got.event_time == "happened"
    assert got.changes == (0, 1)  # counted on the way in: no update, one delete
    assert got == load_plan(staged, [], "happened")
    assert PlanOfParts.from_json(plan.to_json()) == got
    assert load_plan(staged, []).window == (at(5), at(30))  # without event_time: commit times
    old = '{"order": [], "window": null}'  # a plan recorded before business time
    assert PlanOfParts.from_json(old).event_time is None
    # nor counted its updates and deletes: the append asks staging for them
    assert PlanOfParts.from_json(old).changes is None
