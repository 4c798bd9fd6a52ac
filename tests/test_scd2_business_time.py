"""SCD2 versions valid from business time (a dimension's ``effective_from``), on DuckDB and
PostgreSQL, against the reference model of test_scd2 in its ``business`` mode.

The rules (BUSINESS_TIME.md): changes apply in source order exactly as with commit times; only
the times change. An event's time is its ``effective_from`` (NULL: its commit time; a delete:
always its commit time); a version starts, and a delete ends one, at that time but never before
the key's last boundary, so a change that comes later in source order with an earlier (or
equal) time wins and leaves the version it supersedes zero-length, ``[t, t)``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from test_scd2 import (
    BUSINESS,
    BUSINESS_PER_CHANGE,
    COLUMNS,
    DIM,
    FAR_FUTURE,
    INFERRED_SINCE,
    UPDATED,
    Event,
    Reference,
    Scenario,
    apply,
    at,
    check_invariants,
    dimension,
    infer,
    reset,
    scenarios,
    values,
    warehouse,
)

from riverbed.config.tables import TableConfig
from riverbed.errors import ConfigError
from riverbed.load.ddl import check_business_time
from riverbed.load.model import DimensionModel
from riverbed.load.scd2 import dimension_ddl, scd2_statements, staging_ddl
from riverbed.load.warehouse import Warehouse

__all__ = ["warehouse"]  # the fixture, both engines

BEFORE_1900 = -4_000_000_000  # seconds after BASE: in 1897


def check_business_invariants(rows: list[dict[str, Any]]) -> None:
    """check_invariants (rows sorted per key by effective_date, then surrogate: consecutive
    versions meet except across a delete, effective <= expiry, the last one current or
    deleted), and: no two versions of a key valid at one instant, at most one current."""
    check_invariants(rows)
    by_key: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["item_id"], []).append(row)
    for key, versions in by_key.items():
        assert sum(v["is_current_record"] for v in versions) <= 1, f"key {key}: two current"
        spans = [(v["effective_date"], v["expiry_date"]) for v in versions]
        for i, (start, end) in enumerate(spans):
            for other_start, other_end in spans[i + 1 :]:
                overlap = start < other_end and other_start < end
                assert not overlap, (
                    f"key {key}: [{start}, {end}) overlaps [{other_start}, {other_end})"
                )


@st.composite
def business_scenarios(draw: st.DrawFn) -> Scenario:
    """test_scd2's random histories, each event with a random business time: NULL, or a
    second near the commit times (so often out of order, equal to another, before the key's
    current version or before a delete). A delete's (and a truncate's) is there too, for it
    must be ignored. Now and then a time before 1900, before an inferred member's start."""
    scenario = draw(scenarios())
    last = max(e.second for batch in scenario.batches for e in batch)
    times = st.one_of(st.none(), st.integers(-3, last + 3), st.just(BEFORE_1900))
    batches = [[replace(e, business=draw(times)) for e in batch] for batch in scenario.batches]
    return Scenario(batches, scenario.inferred)


@pytest.mark.parametrize("dim", [BUSINESS, BUSINESS_PER_CHANGE], ids=lambda d: d.versions)
def test_business_time_matches_the_reference_model(
    warehouse: Warehouse, dim: DimensionModel
) -> None:
    examples = 40 if warehouse.name == "duckdb" else 15

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(business_scenarios())
    def check(scenario: Scenario) -> None:
        reset(warehouse, dim)
        reference = Reference(dim.versions, business=True)
        for batch, referenced in zip(scenario.batches, scenario.inferred):
            if referenced:
                infer(warehouse, referenced)
                reference.infer(referenced)
            apply(warehouse, batch, dim=dim)
            reference.apply(batch)
            rows = dimension(warehouse)
            assert rows == reference.sorted_rows()
            check_business_invariants(rows)
        # rerunning the last batch, or an older one, changes nothing
        apply(warehouse, scenario.batches[-1], dim=dim)
        apply(warehouse, scenario.batches[0], dim=dim)
        assert dimension(warehouse) == reference.sorted_rows()

    check()


# --- explicit cases -------------------------------------------------------------------------


def history(
    wh: Warehouse, batches: list[list[Event]], dim: DimensionModel = BUSINESS
) -> list[tuple[Any, ...]]:
    """Apply ``batches`` to empty tables; per version (item_id, name, effective, expiry,
    current, deleted), checked against the reference model and the invariants."""
    reset(wh, dim)
    reference = Reference(dim.versions, business=True)
    for batch in batches:
        apply(wh, batch, dim=dim)
        reference.apply(batch)
    rows = dimension(wh)
    assert rows == reference.sorted_rows()
    check_business_invariants(rows)
    return spans(rows)


def spans(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["item_id"],
            r["name"],
            r["effective_date"],
            r["expiry_date"],
            r["is_current_record"],
            r["is_deleted"],
        )
        for r in rows
    ]


def as_of(wh: Warehouse, key: int, second: int) -> list[str]:
    """The names of ``key``'s versions an as-of lookup finds at ``second``."""
    found = wh.query(
        f"SELECT name FROM {DIM.name} WHERE item_id = {key}"
        f" AND effective_date <= TIMESTAMPTZ '{at(second).isoformat()}'"
        f" AND expiry_date > TIMESTAMPTZ '{at(second).isoformat()}'"
    )
    return [r["name"] for r in found.to_pylist()]


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "two batches"])
def test_a_later_change_with_an_earlier_time_wins_and_leaves_a_zero_length_version(
    warehouse: Warehouse, together: bool
) -> None:
    """Source order decides, not business time: the update (commit 20, updated 5) supersedes
    the insert (commit 10, updated 10), which is left [10, 10), found by no as-of lookup."""
    events = [
        Event(1, "I", 10, 100, 1, values(name="a"), business=10),
        Event(1, "U", 20, 200, 1, values(name="b"), business=5),
    ]
    got = history(warehouse, [events] if together else [[e] for e in events])
    assert got == [
        (1, "a", at(10), at(10), False, False),
        (1, "b", at(10), FAR_FUTURE, True, False),
    ]
    assert [as_of(warehouse, 1, s) for s in (5, 9, 10, 500)] == [[], [], ["b"], ["b"]]


def test_equal_times_leave_the_earlier_change_zero_length(warehouse: Warehouse) -> None:
    got = history(
        warehouse,
        [
            [Event(1, "I", 10, 100, 1, values(name="a"), business=7)],
            [
                Event(1, "U", 20, 200, 1, values(name="b"), business=7),
                Event(1, "U", 30, 300, 1, values(name="c"), business=7),
            ],
        ],
    )
    assert got == [
        (1, "a", at(7), at(7), False, False),
        (1, "b", at(7), at(7), False, False),
        (1, "c", at(7), FAR_FUTURE, True, False),
    ]
    assert as_of(warehouse, 1, 7) == ["c"]


def test_changes_of_one_transaction_per_change_are_placed_in_source_order(
    warehouse: Warehouse,
) -> None:
    """per_change: statements of one transaction with decreasing business times; per
    transaction: the state the transaction left, at its last change's time."""
    events = [
        Event(1, "I", 10, 100, 1, values(name="a"), business=10),
        Event(1, "U", 20, 200, 1, values(name="b"), business=30),
        Event(1, "U", 20, 200, 2, values(name="c"), business=25),
    ]
    assert history(warehouse, [events], BUSINESS_PER_CHANGE) == [
        (1, "a", at(10), at(30), False, False),
        (1, "b", at(30), at(30), False, False),
        (1, "c", at(30), FAR_FUTURE, True, False),
    ]
    assert history(warehouse, [events]) == [
        (1, "a", at(10), at(25), False, False),
        (1, "c", at(25), FAR_FUTURE, True, False),
    ]


def test_a_null_business_time_is_the_commit_time(warehouse: Warehouse) -> None:
    got = history(
        warehouse,
        [
            [Event(1, "I", 10, 100, 1, values(name="a"), business=None)],
            [Event(1, "U", 20, 200, 1, values(name="b"), business=15)],
            [Event(1, "U", 30, 300, 1, values(name="c"), business=None)],
        ],
    )
    assert [(name, start, end) for _, name, start, end, _, _ in got] == [
        ("a", at(10), at(15)),
        ("b", at(15), at(30)),
        ("c", at(30), FAR_FUTURE),
    ]
    (row,) = [r for r in dimension(warehouse) if r["name"] == "b"]
    assert row["updated"] == at(15)  # the column itself is kept, an other column


def test_a_type1_change_moves_no_time(warehouse: Warehouse) -> None:
    got = history(
        warehouse,
        [
            [Event(1, "I", 10, 100, 1, values(note="x"), business=10)],
            [Event(1, "U", 20, 200, 1, values(note="y"), business=3)],
            [Event(1, "U", 30, 300, 1, values(note="z", stock=5), business=40)],
        ],
    )
    assert got == [(1, "a", at(10), FAR_FUTURE, True, False)]
    (row,) = dimension(warehouse)
    assert (row["note"], row["stock"], row["updated"]) == ("z", 0, at(10))


def test_a_delete_ends_at_its_commit_time_never_before_the_version_starts(
    warehouse: Warehouse,
) -> None:
    """Key 1 is valid from 50 (a business time ahead of its commit) and deleted at commit 20:
    it ends at 50, zero-length. Key 2 is deleted at commit 60, after its start, the business
    time a delete may carry ignored. Key 3 goes with a truncate at commit 70."""
    got = history(
        warehouse,
        [
            [
                Event(1, "I", 10, 100, 1, values(), business=50),
                Event(2, "I", 10, 100, 2, values(), business=5),
                Event(3, "I", 10, 100, 3, values(), business=65),
            ],
            [Event(1, "D", 20, 200, 1, business=15)],
            [Event(2, "D", 60, 300, 1, business=1)],
            [Event(None, "T", 70, 400, 1, business=2)],
        ],
    )
    assert got == [
        (1, "a", at(50), at(50), False, True),
        (2, "a", at(5), at(60), False, True),
        (3, "a", at(65), at(70), False, True),
    ]


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "separate batches"])
def test_a_reinsert_after_a_delete_never_starts_before_the_delete(
    warehouse: Warehouse, together: bool
) -> None:
    events = [
        Event(1, "I", 10, 100, 1, values(name="a"), business=5),
        Event(1, "D", 20, 200, 1),
        Event(1, "I", 30, 300, 1, values(name="b"), business=15),  # before the delete
        Event(1, "D", 40, 400, 1),
        Event(1, "I", 50, 500, 1, values(name="c"), business=45),  # after it: its own time
    ]
    got = history(warehouse, [events] if together else [[e] for e in events])
    assert got == [
        (1, "a", at(5), at(20), False, True),
        (1, "b", at(20), at(40), False, True),
        (1, "c", at(45), FAR_FUTURE, True, False),
    ]
    assert [as_of(warehouse, 1, s) for s in (19, 20, 42, 45)] == [["a"], ["b"], [], ["c"]]


def test_an_inferred_member_keeps_1900_and_the_next_version_takes_its_own_time(
    warehouse: Warehouse,
) -> None:
    reset(warehouse, BUSINESS)
    reference = Reference(business=True)
    infer(warehouse, [7, 8])
    reference.infer([7, 8])
    batches = [
        [
            Event(7, "I", 10, 100, 1, values(name="a"), business=5),  # completes: 1900 kept
            Event(8, "D", 10, 100, 2, business=1),  # an inferred member deleted: at commit
        ],
        [Event(7, "U", 20, 200, 1, values(name="b"), business=3)],
        [Event(8, "I", 30, 300, 1, values(name="c"), business=2)],  # not before the delete
    ]
    for batch in batches:
        apply(warehouse, batch, dim=BUSINESS)
        reference.apply(batch)
    rows = dimension(warehouse)
    assert rows == reference.sorted_rows()
    check_business_invariants(rows)
    assert spans(rows) == [
        (7, "a", INFERRED_SINCE, at(3), False, False),
        (7, "b", at(3), FAR_FUTURE, True, False),
        (8, None, INFERRED_SINCE, at(10), False, True),
        (8, "c", at(10), FAR_FUTURE, True, False),
    ]


@pytest.mark.parametrize(
    "kind,staged,start",
    [
        ("DATE", dt.date(2024, 3, 5), dt.datetime(2024, 3, 5, tzinfo=dt.UTC)),
        ("TIMESTAMP", dt.datetime(2024, 3, 5, 6, 7), dt.datetime(2024, 3, 5, 6, 7, tzinfo=dt.UTC)),
    ],
)
def test_a_date_or_naive_timestamp_is_read_as_utc(
    warehouse: Warehouse, kind: str, staged: Any, start: dt.datetime
) -> None:
    """A date is its midnight UTC, a naive timestamp a UTC one."""
    dim = replace(BUSINESS, name="dim_day", source="days", effective_from="valid_on")
    cols = {"item_id": exp.DataType.build("BIGINT"), "name": exp.DataType.build("TEXT")}
    cols["valid_on"] = exp.DataType.build(kind)
    dim = replace(dim, tracked=("name",), type1=())
    reset(warehouse)  # the position table too: each run starts at no high-water mark
    for table in (dim.name, dim.staging):
        warehouse.execute(f"DROP TABLE IF EXISTS {table}")
    warehouse.execute(staging_ddl(dim, cols, warehouse.dialect))
    for statement in dimension_ddl(dim, cols, warehouse.dialect):
        warehouse.execute(statement)
    rows = pa.table(
        {
            "item_id": pa.array([1], pa.int64()),
            "name": pa.array(["a"]),
            "valid_on": pa.array([staged]),
            "_op": pa.array(["I"]),
            "_commit_ts": pa.array([at(10)], pa.timestamp("us", tz="UTC")),
            "_lsn": pa.array([100], pa.int64()),
            "_seq": pa.array([1], pa.int64()),
        }
    )
    warehouse.load_arrow(dim.staging, rows)
    with warehouse.transaction():
        for statement in scd2_statements(dim, cols, warehouse.dialect):
            warehouse.execute(statement)
    (got,) = warehouse.query(f"SELECT effective_date FROM {dim.name}").to_pylist()
    assert got["effective_date"].astimezone(dt.UTC) == start


@pytest.mark.parametrize(
    "staged,says",
    [
        ({}, r"'updated' is not a column of items as staged"),
        ({UPDATED: exp.DataType.build("TEXT")}, r"updated is TEXT, not a date or timestamp"),
    ],
)
def test_an_effective_from_not_staged_or_not_a_time_is_refused_naming_the_key(
    staged: dict[str, exp.DataType], says: str
) -> None:
    cfg = TableConfig(
        kind="dimension",
        target=DIM.name,
        keys=["item_id"],
        tracked=["name"],
        effective_from=UPDATED,
    )
    with pytest.raises(ConfigError) as caught:
        check_business_time("items", cfg, {**COLUMNS, **staged})
    (problem,) = caught.value.problems
    assert re.match(r"tables\.items\.effective_from: " + says, problem), problem
    for kind in ("DATE", "TIMESTAMP", "TIMESTAMPTZ"):
        check_business_time("items", cfg, {**COLUMNS, UPDATED: exp.DataType.build(kind)})


@settings(max_examples=200, deadline=None, database=None)
@given(scenarios(), st.data())
def test_the_model_with_commit_times_for_business_times_is_the_commit_time_model(
    scenario: Scenario, data: st.DataObject
) -> None:
    """The reference model itself: business times that are the commit times (or NULL, which
    falls back to them) give the dimension commit times give, ``updated`` aside."""
    plain = Reference()
    business = Reference(business=True)
    for batch, referenced in zip(scenario.batches, scenario.inferred):
        dated = [replace(e, business=data.draw(st.sampled_from([None, e.second]))) for e in batch]
        for model, events in ((plain, batch), (business, dated)):
            model.infer(referenced)
            model.apply(events)
        without = [{k: v for k, v in r.items() if k != "updated"} for r in business.sorted_rows()]
        assert without == plain.sorted_rows()


@settings(max_examples=300, deadline=None, database=None)
@given(business_scenarios(), st.sampled_from(["per_transaction", "per_change"]))
def test_the_business_time_model_keeps_the_invariants(scenario: Scenario, versions: str) -> None:
    """The rules are consistent: whatever the business times, the reference model's versions
    meet, never overlap, and the current one is the source's current row."""
    reference = Reference(versions, business=True)
    live: dict[int, bool] = {}
    for batch, referenced in zip(scenario.batches, scenario.inferred):
        # an inferred member is made for a key with no row at all: one whose insert and
        # delete fell in one transaction (collapsed, per_transaction) has none, though seen
        held = {r["item_id"] for r in reference.rows}
        live.update((k, True) for k in referenced if k not in held)
        reference.infer(referenced)
        reference.apply(batch)
        for e in sorted(batch, key=lambda e: (e.lsn, e.seq)):
            if e.op == "T":
                live = dict.fromkeys(live, False)
            elif e.key is not None:
                live[e.key] = e.op != "D"
        check_business_invariants(reference.sorted_rows())
        current = {r["item_id"] for r in reference.rows if r["is_current_record"]}
        assert current == {k for k, alive in live.items() if alive}
