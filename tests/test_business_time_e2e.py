"""Business time end to end, as a user with a database of their own would meet it (issue 17):
`riverbed init --from-source` on a lending library that is not the shop, nothing edited,
`capture --once` and `run --once`, source changes, again; then the warehouse (DuckDB) is
compared with plain SQL over the source.

The library: members and books are dimensions (referenced by loans and fines) whose rows carry
the time of their last change (``updated_at`` timestamptz, ``modified_at`` a naive timestamp
read as UTC, nullable), so init makes them ``effective_from``; loans (a composite key, an enum,
a numeric fee) and fines (business time a ``date``) are facts whose ``event_time`` init picks
by name. The history spans 2025-2026, long before the capture, so every check below fails
when rows are dated by their commit time:

* each fact's current view equals the source table joined as a user would (per member name
  through the dimension's current row, per genre, per channel);
* per month of business time (``date_key // 100``) the view's counts and sums equal a
  GROUP BY date_trunc('month', ...) over the source;
* dimension versions are valid from the source's own times: the snapshot's from its
  ``updated_at`` / ``modified_at``, an update after it from its new one, an update with an
  earlier time than the row had (later in source order) wins and leaves the version before it
  zero-length; and every fact row keys into the version valid at its business time (an event
  older than the key's first version into that first version).

A fact row keeps the version it was resolved to when appended, so the changes after the
snapshot are chosen not to move a version boundary behind facts already loaded: that is late
dimension data, which append-only facts do not revisit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import Database, run_cli

SCHEMA = """
create schema lending;
create type lending.tier as enum ('basic', 'premium', 'staff');
create type lending.channel as enum ('desk', 'kiosk', 'app');
create table lending.members (
    member_id int primary key, full_name text not null, tier lending.tier not null,
    city text not null, joined_on date not null, updated_at timestamptz not null);
create table lending.books (
    book_id int primary key, title text not null, genre text not null,
    list_price numeric(6, 2) not null check (list_price >= 0), modified_at timestamp);
create table lending.loans (
    branch_id smallint not null, loan_no int not null,
    member_id int not null references lending.members,
    book_id int not null references lending.books,
    loaned_at timestamptz not null, due_on date not null, returned_at timestamptz,
    channel lending.channel not null, fee numeric(6, 2) not null check (fee >= 0),
    primary key (branch_id, loan_no));
create table lending.fines (
    fine_id int primary key, member_id int not null references lending.members,
    issued_on date not null, amount numeric(8, 2) not null check (amount > 0));
"""
MEMBERS = [  # member 3 has no loans before its out-of-order update; member 6 none at all
    (1, "Ada", "basic", "Krakow", date(2024, 3, 2), "2025-06-01 10:00+00"),
    (2, "Alan", "basic", "London", date(2024, 5, 10), "2025-02-14 09:30+00"),
    (3, "Grace", "staff", "Warsaw", date(2024, 7, 1), "2025-03-03 12:00+00"),
    (4, "Edsger", "premium", "Nuenen", date(2024, 9, 9), "2025-01-20 08:00+00"),
    (5, "Barbara", "basic", "Boston", date(2025, 1, 5), "2025-09-30 17:45+00"),
    (6, "Ken", "basic", "Murray Hill", date(2025, 2, 2), "2025-02-02 00:00+00"),
]
BOOKS = [  # book 5's modified_at is NULL: its first version starts at its commit time
    (1, "The Dispossessed", "sf", Decimal("19.90"), "2024-11-01 00:00"),
    (2, "Solaris", "sf", Decimal("14.50"), "2025-04-12 16:20"),
    (3, "Middlemarch", "novel", Decimal("12.00"), "2024-12-24 23:30"),
    (4, "Gödel, Escher, Bach", "science", Decimal("29.99"), "2025-08-08 08:08"),
    (5, "The Art of Computer Programming", "science", Decimal("199.00"), None),
]
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


def _history() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Loans and fines spread over 2025-01 .. 2026-10, some at 23:xx UTC (a day that differs
    by time zone), every loan before the changes made after the snapshot."""
    pick = random.Random(17)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    loans = []
    for n in range(64):
        loaned = start + timedelta(days=pick.randrange(668), hours=pick.choice([8, 13, 23]))
        returned = loaned + timedelta(days=pick.randrange(3, 30)) if n % 3 else None
        loans.append(
            (1 + n % 2, 100 + n, pick.choice([1, 2, 4, 5]), pick.randrange(1, 6), loaned,
             loaned.date() + timedelta(days=14), returned, pick.choice(["desk", "kiosk", "app"]),
             pick.choice([Decimal("0"), Decimal("0.50"), Decimal("1.25"), Decimal("2.00")]))
        )  # fmt: skip
    fines = [
        (n, pick.choice([1, 2, 4, 5]), date(2025, 1, 3) + timedelta(days=pick.randrange(660)),
         Decimal(pick.randrange(50, 2000)) / 100)
        for n in range(1, 17)
    ]  # fmt: skip
    return loans, fines


# after the snapshot, as the application would write them; one transaction each
CHANGES = [
    # member 2 upgraded on 2026-11-20: a loan before that keys into the old tier, one after
    # into the new
    """update lending.members set tier = 'premium', updated_at = '2026-11-20 08:00+00'
           where member_id = 2;
       insert into lending.loans values
           (1, 901, 2, 3, '2026-11-10 15:00+00', '2026-11-24', null, 'app', 1.00),
           (1, 902, 2, 3, '2026-11-25 10:00+00', '2026-12-09', null, 'desk', 0.50)""",
    # member 3's move, recorded with a time earlier than its row has: later in source order,
    # so it wins, and the version before it is left zero-length
    """update lending.members set city = 'Gdansk', updated_at = '2024-12-01 00:00+00'
           where member_id = 3;
       insert into lending.loans values
           (2, 903, 3, 1, '2026-11-15 11:00+00', '2026-11-29', null, 'kiosk', 0)""",
    # book 1 repriced at 10:00 on 2026-11-05 (a naive timestamp: UTC); loans either side
    """update lending.books set list_price = 24.90, modified_at = '2026-11-05 10:00'
           where book_id = 1;
       insert into lending.loans values
           (2, 904, 4, 1, '2026-11-04 09:00+00', '2026-11-18', null, 'desk', 2.00),
           (2, 905, 1, 1, '2026-11-06 09:00+00', '2026-11-20', null, 'app', 1.25)""",
    # a loan returned, a fee corrected, a loan deleted: updates keep the loan's own time
    """update lending.loans set returned_at = '2026-11-30 12:00+00'
           where (branch_id, loan_no) = (1, 100);
       update lending.loans set fee = fee + 3 where (branch_id, loan_no) = (2, 101);
       delete from lending.loans where (branch_id, loan_no) = (1, 102)""",
    # a fine cancelled, one backfilled into June 2025 (a date: midnight UTC)
    """delete from lending.fines where fine_id = 3;
       insert into lending.fines values (17, 5, '2025-06-15', 7.50)""",
    "delete from lending.members where member_id = 6",
]


@pytest.fixture
def lending(database: Database) -> Database:
    loans, fines = _history()
    with database.connect(autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            cur.executemany("insert into lending.members values (%s, %s, %s, %s, %s, %s)", MEMBERS)
            cur.executemany("insert into lending.books values (%s, %s, %s, %s, %s)", BOOKS)
            cur.executemany(
                "insert into lending.loans values (%s, %s, %s, %s, %s, %s, %s, %s, %s)", loans
            )
            cur.executemany("insert into lending.fines values (%s, %s, %s, %s)", fines)
    return database


def test_business_time_from_init_to_the_warehouse(lending: Database, tmp_path: Path) -> None:
    folder = tmp_path / "proj"
    result = run_cli("init", str(folder), "--from-source", lending.dsn, "--schema", "lending")
    assert result.code == 0, result.text
    text = (folder / "riverbed.yaml").read_text()
    for line in ("event_time: loaned_at", "event_time: issued_on"):
        assert f"    {line}\n" in text
    for line in ("effective_from: updated_at", "effective_from: modified_at"):
        assert f"    {line}\n" in text
    # book 5's modified_at is NULL: nullable, so a rule says so (and the run goes on)
    assert "- {type: not_null, column: modified_at, action: warn}" in text
    config = str(folder / "riverbed.yaml")
    assert "versions_after_business_time" not in cycle(config)
    with lending.connect(autocommit=True) as conn:
        [(before_changes,)] = conn.execute("select now()").fetchall()
        for change in CHANGES:
            with conn.transaction():
                conn.execute(change)
    # member 3's earlier-dated move: the run says its version starts later than its time
    said = cycle(config)
    assert "dim_member: 1 new version had a members.updated_at no later than" in said, said

    with lending.connect() as source, warehouse(folder) as wh:

        def both(source_sql: str, warehouse_sql: str) -> tuple[list[Any], list[Any]]:
            return (
                sorted(source.execute(source_sql).fetchall()),
                sorted(wh.execute(warehouse_sql).fetchall()),
            )

        current_views_equal_the_source(both)
        months_equal_the_source(both)
        dimensions_are_valid_from_business_time(source, wh, before_changes)
        facts_are_dated_and_keyed_by_business_time(wh, before_changes)


def cycle(config: str) -> str:
    """capture --once, then run --once; what the run printed."""
    for args in (("capture", "--once"), ("run", "--once")):
        result = run_cli(*args, "-c", config)
        assert result.code == 0, result.text
    return " ".join(result.text.split())  # the console wraps long lines


@contextmanager
def warehouse(folder: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The project's DuckDB warehouse (init's default path), read-only, its session in UTC."""
    conn = duckdb.connect(str(folder / ".riverbed" / "warehouse.duckdb"), read_only=True)
    try:
        conn.execute("set TimeZone = 'UTC'")
        yield conn
    finally:
        conn.close()


Both = Callable[[str, str], tuple[list[Any], list[Any]]]  # source SQL, warehouse SQL -> rows


def current_views_equal_the_source(both: Both) -> None:
    # every live loan, once, with its latest values
    columns = "branch_id, loan_no, member_id, book_id, loaned_at, returned_at, fee"
    source, view = both(
        f"select {columns} from lending.loans", f"select {columns} from fact_loans_current"
    )
    assert source == view and len(source) == 68
    # loans per member name: the fact row's member_key, then that member's current row
    source, view = both(
        "select m.full_name, count(*), sum(l.fee) from lending.loans l"
        " join lending.members m using (member_id) group by 1",
        "select m.full_name, count(*), sum(f.fee) from fact_loans_current f"
        " join dim_member v using (member_key)"
        " join dim_member m on m.member_id = v.member_id and m.is_current_record group by 1",
    )
    assert source == view and len(source) == 5
    source, view = both(
        "select b.genre, count(*), sum(l.fee), count(l.returned_at) from lending.loans l"
        " join lending.books b using (book_id) group by 1",
        "select b.genre, count(*), sum(f.fee), count(f.returned_at) from fact_loans_current f"
        " join dim_book v using (book_key)"
        " join dim_book b on b.book_id = v.book_id and b.is_current_record group by 1",
    )
    assert source == view and len(source) == 3
    source, view = both(
        "select channel::text, count(*), sum(fee) from lending.loans group by 1",
        "select cast(channel as varchar), count(*), sum(fee) from fact_loans_current group by 1",
    )
    assert source == view and len(source) == 3
    source, view = both(
        "select m.full_name, count(*), sum(f.amount) from lending.fines f"
        " join lending.members m using (member_id) group by 1",
        "select m.full_name, count(*), sum(f.amount) from fact_fines_current f"
        " join dim_member v using (member_key)"
        " join dim_member m on m.member_id = v.member_id and m.is_current_record group by 1",
    )
    assert source == view and sum(count for _, count, _ in source) == 16


def months_equal_the_source(both: Both) -> None:
    source, view = both(
        "select to_char(loaned_at at time zone 'UTC', 'YYYYMM')::int, count(*), sum(fee)"
        " from lending.loans group by 1",
        "select date_key // 100, count(*), sum(fee) from fact_loans_current group by 1",
    )
    assert source == view and len(source) > 12
    source, view = both(
        "select date_trunc('month', loaned_at at time zone 'UTC'), count(*)"
        " from lending.loans group by 1",
        "select cast(date_trunc('month', event_ts) as timestamp), count(*)"
        " from fact_loans_current group by 1",
    )
    assert source == view
    source, view = both(  # a date: its month, whatever the time zone
        "select to_char(issued_on, 'YYYYMM')::int, count(*), sum(amount) from lending.fines"
        " group by 1",
        "select date_key // 100, count(*), sum(amount) from fact_fines_current group by 1",
    )
    assert source == view and len(source) > 6


def dimensions_are_valid_from_business_time(source: Any, wh: Any, changed_after: datetime) -> None:
    members = _versions(wh, "dim_member", "member_id", "cast(tier as varchar)", "city")
    snapshot = {m[0]: datetime.fromisoformat(m[5]) for m in MEMBERS}
    for member in (1, 4, 5):  # valid from the source's updated_at, not from the capture
        assert [v[2:] for v in members[member]] == [(snapshot[member], FAR_FUTURE, True)]
    upgraded = datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert members[2] == [
        ("basic", "London", snapshot[2], upgraded, False),
        ("premium", "London", upgraded, FAR_FUTURE, True),
    ]
    # out of order: the later change wins from the time the version before it started
    assert members[3] == [
        ("staff", "Warsaw", snapshot[3], snapshot[3], False),
        ("staff", "Gdansk", snapshot[3], FAR_FUTURE, True),
    ]
    # a delete carries no business time: the version ends at its commit
    [(_, _, since, until, current)] = members[6]
    assert since == snapshot[6] and changed_after <= until < FAR_FUTURE and not current

    books = _versions(wh, "dim_book", "book_id", "list_price")
    repriced = datetime(2026, 11, 5, 10, tzinfo=UTC)  # a naive timestamp, read as UTC
    assert books[1] == [
        (Decimal("19.90"), datetime(2024, 11, 1, tzinfo=UTC), repriced, False),
        (Decimal("24.90"), repriced, FAR_FUTURE, True),
    ]
    source_rows = source.execute(
        "select member_id, full_name, tier::text, city, updated_at from lending.members"
    ).fetchall()
    current = wh.execute(
        "select member_id, full_name, cast(tier as varchar), city, updated_at from dim_member"
        " where is_current_record"
    ).fetchall()
    assert sorted(source_rows) == sorted(current)


def facts_are_dated_and_keyed_by_business_time(wh: Any, changed_after: datetime) -> None:
    member_versions = _versions(wh, "dim_member", "member_id", "member_key")
    book_versions = _versions(wh, "dim_book", "book_id", "book_key")
    loans = wh.execute(
        "select loan_no, _op, loaned_at, event_ts, date_key, member_id, member_key, book_id,"
        " book_key from fact_loans"
    ).fetchall()
    fines = wh.execute(
        "select fine_id, _op, cast(issued_on as timestamptz), event_ts, date_key, member_id,"
        " member_key, null, null from fact_fines"
    ).fetchall()
    assert {op for _, op, *_ in loans} == {"L", "I", "U", "D"}
    for _, op, when, event_ts, date_key, member, member_key, book, book_key in loans + fines:
        if op == "D":  # no business time of its own: its commit time
            assert event_ts >= changed_after
            continue
        assert event_ts == when and date_key == int(when.astimezone(UTC).strftime("%Y%m%d"))
        assert member_key == _as_of(member_versions[member], event_ts)
        if book is not None:
            assert book_key == _as_of(book_versions[book], event_ts)
    # the loans either side of a change, in words
    tiers = dict(
        wh.execute(
            "select f.loan_no, cast(m.tier as varchar) || ' ' || m.city || ' '"
            " || cast(b.list_price as varchar) from fact_loans_current f"
            " join dim_member m using (member_key) join dim_book b using (book_key)"
            " where f.loan_no > 900"
        ).fetchall()
    )
    assert tiers == {
        901: "basic London 12.00",
        902: "premium London 12.00",
        903: "staff Gdansk 24.90",  # the earlier-dated move: only the winning version is found
        904: "premium Nuenen 19.90",
        905: "basic Krakow 24.90",
    }


def _versions(wh: Any, dim: str, key: str, *columns: str) -> dict[int, list[tuple[Any, ...]]]:
    """Per natural key, its versions in order: ``columns``, effective_date, expiry_date,
    is_current_record (zero-length ones before the version that superseded them)."""
    found: dict[int, list[tuple[Any, ...]]] = {}
    for row in wh.execute(
        f"select {key}, {', '.join(columns)}, effective_date, expiry_date, is_current_record"
        f" from {dim} order by {key}, effective_date, _lsn, _seq"
    ).fetchall():
        found.setdefault(row[0], []).append(row[1:])
    return found


def _as_of(versions: list[tuple[Any, ...]], at: datetime) -> int | None:
    """The surrogate key of the version (key, effective, expiry, ...) valid at ``at``; before
    the key's first non-empty version, that one's."""
    live = [v for v in versions if v[1] < v[2]]
    for key, since, until, _ in live:
        if since <= at < until:
            return key
    first = min(live, key=lambda v: v[1])
    return first[0] if at < first[1] else None
