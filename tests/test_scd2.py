"""SCD Type 2 merge: the same scenarios on DuckDB and on PostgreSQL, against a reference model.

The reference model below applies events one at a time in plain Python, following the rules
the issue states (by default first collapsing each transaction's changes of a key to the state
it left); the property test checks that the set-based SQL ends in exactly the same
dimension (surrogate keys included) for random event histories split into random batches.
With ``business`` the model dates versions by the staged ``updated`` column (a dimension's
``effective_from``) as BUSINESS_TIME.md says; test_scd2_business_time runs it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from riverbed.config.stores import WarehouseConfig
from riverbed.errors import ConfigError
from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.model import DimensionModel
from riverbed.load.postgres_warehouse import PostgresWarehouse
from riverbed.load.scd2 import (
    POSITIONS,
    PlanInput,
    dimension_ddl,
    inferred_members_statement,
    plan,
    scd2_sql,
    scd2_statements,
    staging_ddl,
)
from riverbed.load.warehouse import Warehouse, WarehouseError, open_warehouse

DIM = DimensionModel("items", "dim_item", ("item_id",), ("name", "price"), ("note",))
PER_CHANGE = replace(DIM, versions="per_change")  # the same tables, every change a version
# the same dimension with versions valid from the staged ``updated`` column (an other column)
BUSINESS = replace(DIM, effective_from="updated")
BUSINESS_PER_CHANGE = replace(BUSINESS, versions="per_change")
COLUMNS = {
    "item_id": exp.DataType.build("BIGINT"),
    "name": exp.DataType.build("TEXT"),  # tracked
    "price": exp.DataType.build("BIGINT"),  # tracked, fixed width: never TOASTed
    "note": exp.DataType.build("TEXT"),  # type1
    "stock": exp.DataType.build("INT"),  # other
    "descr": exp.DataType.build("TEXT"),  # other
}
VALUES = ("name", "price", "note", "stock", "descr")
UPDATED = "updated"  # BUSINESS's effective_from, a TIMESTAMPTZ (fixed width: never TOASTed)
TOASTABLE = ("name", "note", "descr")
FACTS = "stg_item_facts"
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
FAR_FUTURE = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
INFERRED_SINCE = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


def columns(dim: DimensionModel) -> dict[str, exp.DataType]:
    """The staged columns of ``dim``: with an effective_from, also its ``updated``."""
    if dim.effective_from is None:
        return COLUMNS
    return {**COLUMNS, UPDATED: exp.DataType.build("TIMESTAMPTZ")}


def schema(toast: str = "text", business: bool = False) -> pa.Schema:
    toast_type = pa.list_(pa.string()) if toast == "list" else pa.string()
    updated = [(UPDATED, pa.timestamp("us", tz="UTC"))] if business else []
    return pa.schema(
        [
            ("item_id", pa.int64()),
            ("name", pa.string()),
            ("price", pa.int64()),
            ("note", pa.string()),
            ("stock", pa.int32()),
            ("descr", pa.string()),
            *updated,
            ("_op", pa.string()),
            ("_commit_ts", pa.timestamp("us", tz="UTC")),
            ("_lsn", pa.int64()),
            ("_seq", pa.int64()),
            ("_toast_unchanged", toast_type),
        ]
    )


@dataclass(frozen=True)
class Event:
    key: int | None  # None: a truncate
    op: str  # I, U, D, L, T
    second: int  # commit time, seconds after BASE
    lsn: int
    seq: int
    values: dict[str, Any] = field(default_factory=dict)  # none for a delete
    toast: tuple[str, ...] = ()  # columns not sent (their value here is ignored)
    business: int | None = None  # the staged ``updated``, seconds after BASE; None: NULL

    @property
    def updated(self) -> dt.datetime | None:
        return None if self.business is None else BASE + dt.timedelta(seconds=self.business)

    def row(self, toast: str = "text") -> dict[str, Any]:
        """The staged row; ``toast`` is how the unchanged marks are written: ``text``
        (``a,b``), ``list`` (an Arrow list) or ``brackets`` (``[a, b]``, a list cast to text)."""
        values = {c: (None if c in self.toast else self.values.get(c)) for c in VALUES}
        marks: Any = {
            "text": ",".join(self.toast),
            "list": list(self.toast),
            "brackets": f"[{', '.join(self.toast)}]",
        }[toast]
        return {
            "item_id": self.key,
            **values,
            UPDATED: self.updated,  # staged only where the schema has it
            "_op": self.op,
            "_commit_ts": BASE + dt.timedelta(seconds=self.second),
            "_lsn": self.lsn,
            "_seq": self.seq,
            "_toast_unchanged": (marks or None) if self.toast else None,
        }


# --- the reference model --------------------------------------------------------------------


Change = tuple[Event, dict[str, Any]]  # an event and its values, TOAST resolved (none: a D)


class Reference:
    """The dimension as the rules define it, one event at a time.

    ``business``: versions are valid from the events' ``updated`` (BUSINESS_TIME.md): an
    event's time T is its ``updated`` (NULL: its commit time; a delete: always its commit
    time), and a version starts, or a delete ends one, at T but never before the key's last
    boundary (its current version's start, or the end of its deleted last version)."""

    def __init__(self, versions: str = "per_transaction", business: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.hwm: tuple[int, int] | None = None
        self.versions = versions
        self.business = business
        self.values = (*VALUES, UPDATED) if business else VALUES  # the non-key columns

    def _next_key(self) -> int:
        return max((r["item_key"] for r in self.rows), default=0) + 1

    def _current(self, key: int) -> dict[str, Any] | None:
        found = [r for r in self.rows if r["item_id"] == key and r["is_current_record"]]
        assert len(found) <= 1
        return found[0] if found else None

    def infer(self, keys: list[int]) -> None:
        for key in sorted(set(keys)):
            if not any(r["item_id"] == key for r in self.rows):
                self.rows.append(
                    {
                        "item_key": self._next_key(),
                        "item_id": key,
                        **dict.fromkeys(self.values),
                        "effective_date": INFERRED_SINCE,
                        "expiry_date": FAR_FUTURE,
                        "is_current_record": True,
                        "is_deleted": False,
                        "is_inferred": True,
                        "_lsn": None,
                        "_seq": None,
                    }
                )

    def apply(self, batch: list[Event]) -> None:
        events = sorted(batch, key=lambda e: (e.lsn, e.seq))
        if self.hwm is not None:
            events = [e for e in events if (e.lsn, e.seq) > self.hwm]
        if batch:
            last = max((e.lsn, e.seq) for e in batch)
            self.hwm = last if self.hwm is None else max(self.hwm, last)
        changes = self._resolved(events)
        if self.versions == "per_transaction":
            changes = collapse(changes)
        for e, values in changes:
            self._apply(e, values)

    def _resolved(self, events: list[Event]) -> list[Change]:
        """The events with their TOASTed values filled in, and a TRUNCATE as a delete of every
        key (a delete of a key not live is nothing) but those a later snapshot row copies."""
        keys = {r["item_id"] for r in self.rows} | {e.key for e in events if e.key is not None}
        # what a TOASTed column falls back to: the last value sent in the batch, else the
        # current row's from before the batch
        sent: dict[int, dict[str, Any]] = {}
        for key in keys:
            current = self._current(key)
            sent[key] = {c: current[c] for c in VALUES} if current else {}
        changes: list[Change] = []
        for e in events:
            if e.op == "T":
                # but not of a key a snapshot row after it copies again: that row is compared
                # with the key's version as any event (a resnapshot keeps unchanged versions)
                copied = {c.key for c in events if c.op == "L" and (c.lsn, c.seq) > (e.lsn, e.seq)}
                changes += [(replace(e, key=k, op="D"), {}) for k in sorted(keys - copied)]
                continue
            assert e.key is not None
            values = {}
            if e.op != "D":
                for c in VALUES:
                    values[c] = sent[e.key].get(c) if c in e.toast else e.values[c]
                    sent[e.key][c] = values[c]
                if self.business:
                    values[UPDATED] = e.updated
            changes.append((e, values))
        return changes

    def _time(self, e: Event) -> dt.datetime:
        """T(e): the commit time, or with ``business`` the event's ``updated`` if it has one
        and is no delete (a delete carries no business time of its own)."""
        if self.business and e.op != "D" and e.updated is not None:
            return e.updated
        return BASE + dt.timedelta(seconds=e.second)

    def _placed(self, key: int, at: dt.datetime) -> dt.datetime:
        """Where a boundary at ``at`` lands: with ``business``, never before the key's last
        boundary (its last version's start if current, else its end), so a version that
        comes later in source order never starts before the one it follows."""
        versions = [r for r in self.rows if r["item_id"] == key]
        if not self.business or not versions:
            return at
        last = max(versions, key=lambda r: r["item_key"])
        boundary = last["effective_date"] if last["is_current_record"] else last["expiry_date"]
        return max(at, boundary)

    def _apply(self, e: Event, values: dict[str, Any]) -> None:
        assert e.key is not None
        at = self._placed(e.key, self._time(e))
        current = self._current(e.key)
        if e.op == "D":
            if current is not None:
                current.update(expiry_date=at, is_current_record=False, is_deleted=True)
        elif current is not None and current["is_inferred"]:
            current.update(values, is_inferred=False, _lsn=e.lsn, _seq=e.seq)
        elif current is not None and all(values[t] == current[t] for t in DIM.tracked):
            current.update({c: values[c] for c in DIM.type1})
        else:
            if current is not None:
                current.update(expiry_date=at, is_current_record=False)
            self.rows.append(
                {
                    "item_key": self._next_key(),
                    "item_id": e.key,
                    **values,
                    "effective_date": at,
                    "expiry_date": FAR_FUTURE,
                    "is_current_record": True,
                    "is_deleted": False,
                    "is_inferred": False,
                    "_lsn": e.lsn,
                    "_seq": e.seq,
                }
            )

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=_order)


def collapse(changes: list[Change]) -> list[Change]:
    """Per key and transaction (``lsn``), the last change (the state the transaction left) and
    the last delete before it (a delete then an insert is still a new version)."""
    last: dict[tuple[int | None, int], int] = {}
    last_delete: dict[tuple[int | None, int], int] = {}
    for e, _ in changes:  # in source order
        last[e.key, e.lsn] = e.seq
        if e.op == "D":
            last_delete[e.key, e.lsn] = e.seq
    return [
        (e, values)
        for e, values in changes
        if e.seq in (last[e.key, e.lsn], last_delete.get((e.key, e.lsn)))
    ]


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["item_id"], row["effective_date"], row["item_key"])


# --- running the SQL ------------------------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    wh: Warehouse
    if request.param == "duckdb":
        wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    else:
        wh = PostgresWarehouse(request.getfixturevalue("database").dsn)
    reset(wh)
    yield wh
    wh.close()


def reset(wh: Warehouse, dim: DimensionModel = DIM) -> None:
    """Empty tables for ``dim`` (DIM's, with ``updated`` if ``dim`` has an effective_from)."""
    for table in (DIM.name, DIM.staging, POSITIONS, FACTS):
        wh.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in [
        staging_ddl(DIM, columns(dim), wh.dialect),
        *dimension_ddl(DIM, columns(dim), wh.dialect, indexes=wh.has_indexes),
    ]:
        wh.execute(statement)
    wh.execute(f"CREATE TABLE {FACTS} (item_id BIGINT, amount BIGINT)")


def apply(
    wh: Warehouse, batch: list[Event], toast: str = "text", dim: DimensionModel = DIM
) -> None:
    """What the loader does: truncate-and-load the staging table, merge in one transaction."""
    wh.execute(exp.delete(DIM.staging))
    rows = [e.row(toast) for e in batch]
    business = dim.effective_from is not None
    wh.load_arrow(DIM.staging, pa.Table.from_pylist(rows, schema=schema(toast, business)))
    with wh.transaction():
        for statement in merge_sql(wh.dialect, dim):
            wh.execute(statement)


@functools.cache
def merge_sql(dialect: str, dim: DimensionModel) -> tuple[str, ...]:
    """The merge, generated once per dialect (as a loader would per dimension and run)."""
    return tuple(s.sql(dialect=dialect) for s in scd2_statements(dim, columns(dim), dialect))


def infer(wh: Warehouse, keys: list[int]) -> None:
    wh.execute(exp.delete(FACTS))
    facts = pa.table({"item_id": pa.array(keys, pa.int64())})
    wh.load_arrow(FACTS, facts)
    with wh.transaction():
        wh.execute(inferred_members_statement(DIM, FACTS, "item_id", wh.dialect))


def dimension(wh: Warehouse) -> list[dict[str, Any]]:
    rows = wh.query(f"SELECT * FROM {DIM.name}").to_pylist()
    for row in rows:  # one time zone object for both engines
        for name in ("effective_date", "expiry_date", UPDATED):
            if row.get(name) is not None:
                row[name] = row[name].astimezone(dt.UTC)
    return sorted(rows, key=_order)


def check_invariants(rows: list[dict[str, Any]]) -> None:
    """One current row per live key, none for a deleted one; ranges meet exactly, except
    across a delete (a gap up to the re-insert); never overlap."""
    by_key: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["item_id"], []).append(row)
    for key, versions in by_key.items():
        for before, after in zip(versions, versions[1:]):
            assert not before["is_current_record"], f"key {key}: a current row is not the last"
            if before["is_deleted"]:
                assert before["expiry_date"] <= after["effective_date"], f"key {key}: overlap"
            else:
                assert before["expiry_date"] == after["effective_date"], f"key {key}: gap"
        for version in versions:
            assert version["effective_date"] <= version["expiry_date"]
            assert version["is_current_record"] == (version["expiry_date"] == FAR_FUTURE)
            assert not (version["is_current_record"] and version["is_deleted"])
        last = versions[-1]
        assert last["is_current_record"] != last["is_deleted"], f"key {key}: {last}"


# --- random histories -----------------------------------------------------------------------

DOMAIN: dict[str, list[Any]] = {
    "name": ["a", "b", None],
    "price": [1, 2, None],
    "note": ["x", "y", None],
    "stock": [0, 1, None],
    "descr": ["p", "q", None],
}


@dataclass
class Scenario:
    batches: list[list[Event]]
    inferred: list[list[int]]  # keys facts reference before each batch


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    keys = draw(st.integers(2, 4))
    source: dict[int, dict[str, Any] | None] = dict.fromkeys(range(1, keys + 1))
    events: list[Event] = []
    lsn, second = 100, 0
    for _ in range(draw(st.integers(1, 10))):
        lsn += draw(st.integers(1, 50))
        second += draw(st.sampled_from([0, 0, 1, 5]))  # equal commit times across transactions
        if draw(st.integers(0, 7)) == 0:  # a TRUNCATE, its own transaction
            source = dict.fromkeys(source)
            events.append(Event(None, "T", second, lsn, 1))
            continue
        for seq in range(1, draw(st.integers(1, 4)) + 1):
            key = draw(st.integers(1, keys))
            state = source[key]
            if state is None:
                op = draw(st.sampled_from(["I", "I", "L", "U"]))  # U: a row we never saw
                values = {c: draw(st.sampled_from(DOMAIN[c])) for c in VALUES}
                source[key] = values
                events.append(Event(key, op, second, lsn, seq, values))
                continue
            kind = draw(st.sampled_from(["tracked", "type1", "other", "nothing", "delete"]))
            if kind == "delete":
                source[key] = None
                events.append(Event(key, "D", second, lsn, seq))
                continue
            changed = {
                "tracked": ["name", "price"],
                "type1": ["note"],
                "other": ["stock", "descr"],
                "nothing": [],
            }[kind]
            values = dict(state)
            for c in draw(st.sets(st.sampled_from(changed), min_size=1)) if changed else ():
                values[c] = draw(st.sampled_from([v for v in DOMAIN[c] if v != state[c]]))
            unchanged = [c for c in TOASTABLE if values[c] == state[c]]
            toast = tuple(c for c in unchanged if draw(st.booleans()))
            source[key] = values
            events.append(Event(key, "U", second, lsn, seq, values, toast))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < len(events)], len(events)]
    batches = [events[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    inferred = [
        draw(st.lists(st.integers(1, keys + 1), max_size=2)) if draw(st.booleans()) else []
        for _ in batches
    ]
    return Scenario(batches, inferred)


@pytest.mark.parametrize("dim", [DIM, PER_CHANGE], ids=lambda d: d.versions)
def test_matches_the_reference_model(warehouse: Warehouse, dim: DimensionModel) -> None:
    examples = 40 if warehouse.name == "duckdb" else 15

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(scenarios())
    def check(scenario: Scenario) -> None:
        reset(warehouse)
        reference = Reference(dim.versions)
        for batch, referenced in zip(scenario.batches, scenario.inferred):
            if referenced:
                infer(warehouse, referenced)
                reference.infer(referenced)
            apply(warehouse, batch, dim=dim)
            reference.apply(batch)
            rows = dimension(warehouse)
            assert rows == reference.sorted_rows()
            check_invariants(rows)
        # rerunning the last batch, or an older one, changes nothing
        apply(warehouse, scenario.batches[-1], dim=dim)
        apply(warehouse, scenario.batches[0], dim=dim)
        assert dimension(warehouse) == reference.sorted_rows()

    check()


# --- explicit cases -------------------------------------------------------------------------


def values(
    name: Any = "a", price: Any = 1, note: Any = "x", stock: Any = 0, descr: Any = "p"
) -> dict[str, Any]:
    return {"name": name, "price": price, "note": note, "stock": stock, "descr": descr}


def at(second: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=second)


def test_several_changes_to_one_key_in_one_batch_per_change(warehouse: Warehouse) -> None:
    apply(
        warehouse,
        [
            Event(1, "I", 10, 100, 1, values(name="a")),
            Event(1, "U", 20, 200, 1, values(name="b")),
            Event(1, "U", 20, 200, 2, values(name="c")),  # same transaction: zero-length version
            Event(1, "U", 30, 300, 1, values(name="c", price=2)),
        ],
        dim=PER_CHANGE,
    )
    rows = dimension(warehouse)
    assert [(r["name"], r["price"]) for r in rows] == [("a", 1), ("b", 1), ("c", 1), ("c", 2)]
    assert [(r["effective_date"], r["expiry_date"]) for r in rows] == [
        (at(10), at(20)),
        (at(20), at(20)),
        (at(20), at(30)),
        (at(30), FAR_FUTURE),
    ]
    assert [r["is_current_record"] for r in rows] == [False, False, False, True]
    assert [(r["_lsn"], r["_seq"]) for r in rows] == [(100, 1), (200, 1), (200, 2), (300, 1)]
    assert len({r["item_key"] for r in rows}) == 4
    check_invariants(rows)


FIVE_UPDATES = [  # one transaction: five tracked changes of key 1, TOAST marks included
    Event(1, "U", 20, 200, seq, values(name=f"n{seq}", price=seq, note=f"t{seq}", descr=f"d{seq}"))
    for seq in range(1, 5)
] + [Event(1, "U", 20, 200, 5, values(name="n5", price=5, note="t5"), toast=("descr",))]


def test_one_version_per_key_per_source_transaction(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values())])
    apply(warehouse, FIVE_UPDATES)
    rows = dimension(warehouse)
    assert [(r["name"], r["price"], r["note"], r["descr"]) for r in rows] == [
        ("a", 1, "x", "p"),
        ("n5", 5, "t5", "d4"),  # the last values; descr unsent, from the update before it
    ]
    assert [(r["effective_date"], r["expiry_date"]) for r in rows] == [
        (at(10), at(20)),
        (at(20), FAR_FUTURE),
    ]
    assert (rows[1]["_lsn"], rows[1]["_seq"], rows[1]["is_current_record"]) == (200, 5, True)
    check_invariants(rows)


def test_per_change_keeps_every_statement_of_a_transaction(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values())], dim=PER_CHANGE)
    apply(warehouse, FIVE_UPDATES, dim=PER_CHANGE)
    new = dimension(warehouse)[1:]
    assert [(r["name"], r["descr"], r["_seq"]) for r in new] == [
        (f"n{seq}", f"d{min(seq, 4)}", seq) for seq in range(1, 6)
    ]
    assert [r["expiry_date"] for r in new] == [at(20)] * 4 + [FAR_FUTURE]  # four zero-length
    check_invariants(dimension(warehouse))


def test_what_a_transaction_leaves_of_a_key(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(k, "I", 10, 100, k, values()) for k in (1, 2)])
    apply(
        warehouse,
        [
            Event(1, "U", 20, 200, 1, values(name="b")),
            Event(1, "D", 20, 200, 2),  # updated then deleted: deleted
            Event(2, "D", 20, 200, 3),
            Event(2, "I", 20, 200, 4, values()),  # deleted then inserted: a new version
            Event(3, "I", 20, 200, 5, values()),
            Event(3, "D", 20, 200, 6),  # inserted then deleted: nothing
        ],
    )
    rows = dimension(warehouse)
    assert [
        (r["item_id"], r["name"], r["expiry_date"], r["is_deleted"], r["is_current_record"])
        for r in rows
    ] == [
        (1, "a", at(20), True, False),
        (2, "a", at(20), True, False),
        (2, "a", FAR_FUTURE, False, True),
    ]
    check_invariants(rows)


def test_delete_then_reinsert_in_one_batch(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values()), Event(2, "I", 10, 100, 2, values())])
    apply(
        warehouse,
        [
            Event(1, "D", 20, 200, 1),
            Event(1, "I", 30, 300, 1, values()),  # same values, still a new version
            Event(2, "D", 30, 300, 2),
            Event(2, "D", 31, 310, 1),  # a delete of a deleted key changes nothing
        ],
    )
    rows = dimension(warehouse)
    one = [r for r in rows if r["item_id"] == 1]
    assert [(r["effective_date"], r["expiry_date"], r["is_deleted"]) for r in one] == [
        (at(10), at(20), True),
        (at(30), FAR_FUTURE, False),
    ]
    assert [r["is_current_record"] for r in one] == [False, True]
    two = [r for r in rows if r["item_id"] == 2]
    assert [(r["expiry_date"], r["is_deleted"], r["is_current_record"]) for r in two] == [
        (at(30), True, False)
    ]
    check_invariants(rows)


def test_inferred_member_is_completed_by_the_first_real_version(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values())])
    infer(warehouse, [7, 7, 1])  # 1 has a row already; 7 is referenced twice
    rows = dimension(warehouse)
    (inferred,) = [r for r in rows if r["item_id"] == 7]
    assert inferred["is_inferred"] and inferred["is_current_record"]
    assert inferred["effective_date"] == INFERRED_SINCE
    assert [inferred[c] for c in VALUES] == [None] * len(VALUES)
    infer(warehouse, [7])  # already there: nothing more
    assert len(dimension(warehouse)) == 2

    apply(warehouse, [Event(7, "I", 20, 200, 1, values(name="seven"))])
    (completed,) = [r for r in dimension(warehouse) if r["item_id"] == 7]
    assert completed["item_key"] == inferred["item_key"]
    assert completed["effective_date"] == INFERRED_SINCE
    assert completed["name"] == "seven" and not completed["is_inferred"]
    assert (completed["_lsn"], completed["_seq"]) == (200, 1)

    apply(warehouse, [Event(7, "U", 30, 300, 1, values(name="eight"))])  # versions normally
    seven = [r for r in dimension(warehouse) if r["item_id"] == 7]
    assert [(r["name"], r["effective_date"], r["expiry_date"]) for r in seven] == [
        ("seven", INFERRED_SINCE, at(30)),
        ("eight", at(30), FAR_FUTURE),
    ]
    check_invariants(dimension(warehouse))


@pytest.mark.parametrize("toast", ["text", "list", "brackets"])
def test_toast_unchanged_column_keeps_the_previous_value(warehouse: Warehouse, toast: str) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values(name="a", note="x", descr="long"))])
    apply(
        warehouse,
        [
            # from the dimension's current row: name changes, descr and note were not sent
            Event(1, "U", 20, 200, 1, values(name="b"), toast=("descr", "note")),
            # from the previous event in the batch (which itself took it from the row)
            Event(1, "U", 30, 300, 1, values(name="c"), toast=("descr",)),
            # a TOASTed tracked column is no change: type1 only
            Event(1, "U", 40, 400, 1, values(name="c", note="y"), toast=("name", "descr")),
        ],
        toast=toast,
    )
    rows = dimension(warehouse)
    assert [(r["name"], r["note"], r["descr"]) for r in rows] == [
        ("a", "x", "long"),
        ("b", "x", "long"),
        ("c", "y", "long"),
    ]
    check_invariants(rows)


def test_type1_and_other_columns(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values(note="x", stock=0))])
    apply(warehouse, [Event(1, "U", 20, 200, 1, values(note="y", stock=0))])  # type1 only
    apply(warehouse, [Event(1, "U", 30, 300, 1, values(note="y", stock=5))])  # other only
    (row,) = dimension(warehouse)
    assert (row["note"], row["stock"], row["effective_date"]) == ("y", 0, at(10))
    assert (row["_lsn"], row["_seq"]) == (100, 1)  # the version's start, not the last touch
    apply(warehouse, [Event(1, "U", 40, 400, 1, values(name="b", note="z", stock=5))])
    rows = dimension(warehouse)
    assert [(r["name"], r["note"], r["stock"]) for r in rows] == [("a", "y", 0), ("b", "z", 5)]


def test_rerunning_a_batch_changes_nothing(warehouse: Warehouse) -> None:
    first = [Event(1, "I", 10, 100, 1, values()), Event(2, "I", 10, 100, 2, values())]
    second = [Event(1, "U", 20, 200, 1, values(name="b")), Event(2, "D", 20, 200, 2)]
    apply(warehouse, first)
    apply(warehouse, second)
    expected = dimension(warehouse)
    apply(warehouse, second)
    apply(warehouse, first)
    assert dimension(warehouse) == expected
    # a batch overlapping the applied one applies only what is new
    apply(warehouse, [*second, Event(2, "I", 30, 300, 1, values())])
    rows = dimension(warehouse)
    assert len(rows) == len(expected) + 1
    check_invariants(rows)


def test_one_current_row_per_live_key_and_contiguous_ranges(warehouse: Warehouse) -> None:
    reference = Reference()
    batches = [
        [Event(k, "L", 0, 10, k, values(name=f"n{k}")) for k in range(1, 6)],
        [Event(k, "U", 5, 20, k, values(name=f"m{k}")) for k in range(1, 6)],
        [Event(2, "D", 6, 30, 1), Event(3, "U", 6, 30, 2, values(price=9))],
        [Event(2, "I", 9, 40, 1, values()), Event(4, "D", 9, 40, 2), Event(5, "D", 9, 40, 3)],
        [Event(5, "I", 9, 50, 1, values()), Event(1, "U", 9, 50, 2, values(note="y"))],
    ]
    for batch in batches:
        apply(warehouse, batch)
        reference.apply(batch)
        rows = dimension(warehouse)
        check_invariants(rows)
        assert rows == reference.sorted_rows()
    current = [r["item_id"] for r in dimension(warehouse) if r["is_current_record"]]
    assert sorted(current) == [1, 2, 3, 5]


def test_composite_natural_key(warehouse: Warehouse) -> None:
    dim = DimensionModel("stock", "dim_stock", ("shop", "sku"), ("level",), ())
    columns = {
        "shop": exp.DataType.build("TEXT"),
        "sku": exp.DataType.build("INT"),
        "level": exp.DataType.build("TEXT"),
    }
    dialect = warehouse.dialect
    warehouse.execute(staging_ddl(dim, columns, dialect))
    for statement in dimension_ddl(dim, columns, dialect, indexes=warehouse.has_indexes):
        warehouse.execute(statement)

    def merge(rows: list[tuple[str, int, str | None, str, int]]) -> None:
        warehouse.execute(exp.delete(dim.staging))
        names = ["shop", "sku", "level", "_op", "_lsn"]
        table = pa.Table.from_pylist([dict(zip(names, r)) for r in rows])
        table = table.append_column("_seq", pa.array([1] * len(rows), pa.int64()))
        table = table.append_column("_commit_ts", pa.array([BASE] * len(rows)))
        warehouse.load_arrow(dim.staging, table)
        with warehouse.transaction():
            for statement in scd2_statements(dim, columns, dialect):
                warehouse.execute(statement)

    merge([("a", 1, "low", "I", 1), ("a", 2, "low", "I", 2), ("b", 1, "low", "I", 3)])
    merge([("a", 1, "high", "U", 4), ("b", 1, None, "D", 5), ("a", 2, "low", "U", 6)])
    rows = warehouse.query(
        "SELECT shop, sku, level, is_current_record, is_deleted FROM dim_stock "
        "ORDER BY shop, sku, stock_key"
    ).to_pylist()
    assert [tuple(r.values()) for r in rows] == [
        ("a", 1, "low", False, False),
        ("a", 1, "high", True, False),
        ("a", 2, "low", True, False),
        ("b", 1, "low", False, True),
    ]
    assert (
        warehouse.query("SELECT * FROM _riverbed_scd2_positions ORDER BY dimension").num_rows == 1
    )


def test_config_that_does_not_match_the_batch_is_refused() -> None:
    wrong = DimensionModel("items", "dim_item", ("item_id",), ("nmae",), ())
    with pytest.raises(ConfigError, match=r"tables\.items\.tracked: nmae not in the staged"):
        scd2_statements(wrong, COLUMNS, "duckdb")
    clash = {**COLUMNS, "effective_date": exp.DataType.build("DATE")}
    with pytest.raises(ConfigError, match="effective_date clashes"):
        scd2_statements(DIM, clash, "postgres")


@pytest.mark.parametrize("dialect", ["redshift", "duckbd"])
def test_a_merge_for_a_warehouse_it_cannot_run_on_names_the_setting(dialect: str) -> None:
    """A bare ValueError before: a traceback, had a command reached it (the config's
    warehouse.engine admits only the two merge dialects, so none does today)."""
    with pytest.raises(ConfigError, match=r"^warehouse\.engine: .*" + dialect):
        scd2_statements(DIM, COLUMNS, dialect)


# --- the warehouse contract -----------------------------------------------------------------


def test_transaction_rolls_back_on_error(warehouse: Warehouse) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values())])
    before = dimension(warehouse)
    with pytest.raises(WarehouseError), warehouse.transaction():
        warehouse.execute(exp.delete(DIM.name))
        warehouse.execute("SELECT * FROM no_such_table")
    assert dimension(warehouse) == before
    with warehouse.transaction():  # the connection is usable again
        assert warehouse.execute(exp.delete(DIM.name)) == 1
    assert dimension(warehouse) == []


def test_load_arrow_matches_columns_by_name(warehouse: Warehouse) -> None:
    rows = pa.table({"amount": [5, None], "item_id": [1, 2]})
    assert warehouse.load_arrow(FACTS, rows) == 2
    loaded = warehouse.query(f"SELECT item_id, amount FROM {FACTS} ORDER BY item_id")
    assert loaded.to_pylist() == [{"item_id": 1, "amount": 5}, {"item_id": 2, "amount": None}]
    with pytest.raises(WarehouseError, match="has no column colour"):
        warehouse.load_arrow(FACTS, pa.table({"item_id": [3], "colour": ["red"]}))
    with pytest.raises(WarehouseError, match="does not exist"):
        warehouse.load_arrow("no_such_table", rows)
    assert warehouse.columns("no_such_table") is None
    assert list(warehouse.columns(FACTS) or {}) == ["item_id", "amount"]


def test_open_warehouse_follows_the_config(tmp_path: Path, database: Any) -> None:
    duck = open_warehouse(WarehouseConfig(path=Path("wh/warehouse.duckdb")), tmp_path)
    assert duck.name == "duckdb" and (tmp_path / "wh" / "warehouse.duckdb").exists()
    duck.close()
    pg = open_warehouse(WarehouseConfig(engine="postgres", dsn=database.dsn), tmp_path)
    assert pg.name == "postgres"
    assert pg.query("SHOW TimeZone").column(0).to_pylist() == ["UTC"]
    pg.close()


def test_unreachable_postgres_is_a_transient_error() -> None:
    from conftest import free_port

    dsn = f"host=127.0.0.1 port={free_port()} dbname=nowhere user=postgres"
    with pytest.raises(WarehouseError, match="cannot connect to the warehouse") as caught:
        PostgresWarehouse(dsn)
    assert caught.value.transient


def test_read_only_warehouse_refuses_writes(
    warehouse: Warehouse, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    apply(warehouse, [Event(1, "I", 10, 100, 1, values())])
    if isinstance(warehouse, DuckDBWarehouse):
        warehouse.close()  # a DuckDB file has one writer or any number of readers
        reader: Warehouse = DuckDBWarehouse(warehouse.path, read_only=True)
    else:
        dsn = request.getfixturevalue("database").dsn  # the warehouse fixture's database
        reader = PostgresWarehouse(dsn, read_only=True)
    try:
        assert reader.query(f"SELECT count(*) AS n FROM {DIM.name}").to_pylist() == [{"n": 1}]
        with pytest.raises(WarehouseError, match="(?i)read.only"):
            reader.execute(exp.delete(DIM.name))
    finally:
        reader.close()
    with pytest.raises(WarehouseError, match="does not exist yet"):
        DuckDBWarehouse(tmp_path / "missing.duckdb", read_only=True)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_the_merge_text_kept_between_runs_follows_the_columns(dialect: str) -> None:
    """The SQL a run loop reuses is the SQL of the dimension and column set at hand: a column
    added by the source (or retyped) gets text of its own, and the first set's stays right."""
    fresh = [s.sql(dialect=dialect) for s in scd2_statements(DIM, COLUMNS, dialect)]
    assert scd2_sql(DIM, COLUMNS, dialect) == fresh
    added = {**COLUMNS, "colour": exp.DataType.build("TEXT")}
    with_colour = scd2_sql(DIM, added, dialect)
    assert any('"colour"' in text for text in with_colour)
    assert with_colour == [s.sql(dialect=dialect) for s in scd2_statements(DIM, added, dialect)]
    retyped = {**COLUMNS, "price": exp.DataType.build("DECIMAL(12, 2)")}
    assert scd2_sql(DIM, retyped, dialect) != fresh
    assert scd2_sql(DIM, COLUMNS, dialect) == fresh


def test_keys_with_one_event_take_no_window(warehouse: Warehouse) -> None:
    """Only keys with several events (or a TOAST mark) go through the plan's window steps;
    a key with one event is compared with its current row by a join, with the same result."""
    apply(warehouse, [Event(k, "I", 10, 100, k, values(name=f"n{k}")) for k in range(1, 7)])
    infer(warehouse, [7])
    batch = [
        Event(1, "U", 20, 200, 1, values(name="changed")),  # new: expires the current row
        Event(2, "U", 20, 200, 2, values(name="n2", note="y")),  # type1
        Event(3, "D", 20, 200, 3),  # close
        Event(8, "D", 20, 200, 4),  # noop: no live row
        Event(9, "I", 20, 200, 5, values(name="born")),  # new, no current row
        Event(7, "U", 20, 200, 6, values(name="filled")),  # complete
        Event(4, "U", 20, 200, 7, values(name="first")),  # key 4: two events
        Event(4, "U", 30, 300, 1, values(name="second")),
        Event(5, "U", 30, 300, 2, values(name="n5", descr="q"), toast=("note",)),  # marked
    ]
    warehouse.execute(exp.delete(DIM.staging))
    rows = pa.Table.from_pylist([e.row() for e in batch], schema=schema())
    warehouse.load_arrow(DIM.staging, rows)
    query = plan(PlanInput.of(DIM, columns(DIM)))
    streamed = exp.select("item_id", "_op").from_("stream")
    streamed.set("with_", query.args["with_"])
    seen = sorted((r["item_id"], r["_op"]) for r in warehouse.query(streamed).to_pylist())
    assert seen == [(4, "U"), (4, "U"), (4, "current"), (5, "U"), (5, "current")]

    apply(warehouse, batch)
    rows_by_key: dict[int, list[dict[str, Any]]] = {}
    for row in dimension(warehouse):
        rows_by_key.setdefault(row["item_id"], []).append(row)
    assert [(r["name"], r["expiry_date"]) for r in rows_by_key[1]] == [
        ("n1", at(20)),
        ("changed", FAR_FUTURE),
    ]
    assert [(r["note"], r["_lsn"], r["is_current_record"]) for r in rows_by_key[2]] == [
        ("y", 100, True)  # type1: the version's start and position stay
    ]
    assert [(r["is_deleted"], r["expiry_date"]) for r in rows_by_key[3]] == [(True, at(20))]
    assert 8 not in rows_by_key
    assert [(r["name"], r["is_current_record"]) for r in rows_by_key[9]] == [("born", True)]
    assert [(r["name"], r["is_inferred"], r["effective_date"]) for r in rows_by_key[7]] == [
        ("filled", False, INFERRED_SINCE)
    ]
    assert [r["name"] for r in rows_by_key[4]] == ["n4", "first", "second"]
    # the marked note keeps its value; descr, neither tracked nor type1, changes nothing
    assert [(r["note"], r["descr"]) for r in rows_by_key[5]] == [("x", "p")]
    keys = [r["item_key"] for r in dimension(warehouse) if r["effective_date"] == at(20)]
    assert len(keys) == len(set(keys)) == 3  # 1, 9 and the first of 4: numbered together
    check_invariants(dimension(warehouse))


def test_postgres_dimension_leaves_room_for_hot_updates(warehouse: Warehouse) -> None:
    """PostgreSQL: the dimension's pages keep a tenth free, so the merge's update of a current
    row (no indexed column changes) stays on its page, a HOT update with no index entries."""
    found = warehouse.query(
        "SELECT reloptions FROM pg_class WHERE relname = 'dim_item'"
        if warehouse.dialect == "postgres"
        else "SELECT NULL AS reloptions"
    ).to_pylist()
    expected = ["fillfactor=90"] if warehouse.dialect == "postgres" else None
    assert found == [{"reloptions": expected}]
