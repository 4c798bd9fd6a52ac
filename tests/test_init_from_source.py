"""`riverbed init --from-source`: a riverbed.yaml inferred from a database that is not the shop
(a library), which loads as it is, says why it chose what it chose, and runs: capture and one
pipeline run put the library's rows in the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_support import client, log_in

from conftest import Database, free_port, run_cli, superuser_password
from riverbed.config import load_project, parse_config
from riverbed.config.proposal import propose
from riverbed.config.writer import config_text
from riverbed.source.catalog import Bound, Catalog, Check, Column, ForeignKey, Table
from riverbed.source.embedded import EmbeddedServer

LIBRARY = """
create schema library;
create type library.book_format as enum ('hardcover', 'paperback', 'ebook');
create table library.authors (
    author_id int primary key, name text not null, country text);
create table library.members (
    member_id int primary key, email text not null unique, full_name text not null,
    joined_on date not null, deposit numeric(6, 2) check (deposit > 0));
create table library.books (
    book_id int primary key, author_id int not null references library.authors,
    title text not null, format library.book_format not null, pages int check (pages > 0),
    published date, rating numeric(2, 1) check (rating between 0 and 5));
create table library.loans (
    book_id int not null references library.books,
    member_id int not null references library.members,
    loaned_at timestamptz not null, due_date date not null, returned_at timestamptz,
    status text not null check (status in ('open', 'returned', 'lost')),
    primary key (book_id, member_id, loaned_at), check (due_date >= loaned_at::date));
create table library.fines (
    fine_id int primary key, book_id int not null, member_id int not null,
    loaned_at timestamptz not null, amount numeric(8, 2) not null check (amount >= 0),
    issued_at timestamptz not null default now(),
    foreign key (book_id, member_id, loaned_at) references library.loans);
create table library.visits (member_id int, visited_at timestamptz);
create table library.reading_room (seat int not null, entered_at timestamptz not null, note text);
alter table library.reading_room replica identity full;

insert into library.authors values (1, 'Ursula K. Le Guin', 'US'), (2, 'Stanislaw Lem', 'PL');
insert into library.members values (10, 'ada@example.org', 'Ada', '2026-01-02', 20),
    (11, 'alan@example.org', 'Alan', '2026-02-03', null);
insert into library.books values
    (100, 1, 'The Dispossessed', 'paperback', 387, '1974-05-01', 4.5),
    (101, 2, 'Solaris', 'hardcover', 204, '1961-01-01', 4.0),
    (102, 2, 'Fiasco', 'ebook', null, null, null);
insert into library.loans values
    (100, 10, '2026-11-01 10:00+00', '2026-11-15', '2026-11-20 09:00+00', 'returned'),
    (101, 11, '2026-11-03 12:00+00', '2026-11-17', null, 'open');
insert into library.fines values (1000, 100, 10, '2026-11-01 10:00+00', 2.50, '2026-11-20 09:00+00');
insert into library.visits values (10, '2026-11-01 09:55+00');
insert into library.reading_room values (3, '2026-11-01 10:05+00', null), (4, '2026-11-01 10:06+00', 'x');
"""


@pytest.fixture
def library(database: Database) -> Database:
    with database.connect(autocommit=True) as conn:
        conn.execute(LIBRARY)
    return database


def init(folder: Path, dsn: str, *args: str) -> tuple[int, str]:
    result = run_cli("init", str(folder), "--from-source", dsn, *args)
    assert "Traceback" not in result.text
    return result.code, result.text


def test_the_inferred_config_loads_chooses_and_runs(
    library: Database, pg_server: EmbeddedServer, tmp_path: Path
) -> None:
    folder = tmp_path / "proj"
    # a DSN with the password in it, as a user may paste one: it never reaches the file
    password = superuser_password(pg_server)
    dsn = library.dsn.split(" passfile=")[0] + f" password={password}"
    code, out = init(folder, dsn, "--schema", "library")
    assert code == 0, out
    assert "left out visits" in out and "PGPASSWORD" in out
    text = (folder / "riverbed.yaml").read_text()
    # the comments as one text: they wrap at 100 columns
    prose = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines())
    assert password not in text and "password: {env: PGPASSWORD}" in text
    assert "alter table library.visits replica identity full;" in text
    config = load_project(folder / "riverbed.yaml").config
    assert config.source.schema_name == "library" and config.source.password is not None
    assert config.source.dsn is not None and "dbname=" + library.name in config.source.dsn

    tables = config.tables
    # visits: no key; reading_room has none either, but REPLICA IDENTITY FULL: all its columns
    assert set(tables) == {"authors", "members", "books", "loans", "fines", "reading_room"}
    assert tables["reading_room"].keys == ["seat", "entered_at", "note"]
    kinds = {name: t.kind for name, t in tables.items()}
    assert kinds == {
        "authors": "dimension",
        "members": "dimension",
        "books": "dimension",  # referenced by loans and referencing authors: both -> dimension
        "loans": "dimension",  # referenced by fines (a composite key)
        "fines": "fact",
        "reading_room": "fact",
    }
    assert tables["loans"].keys == ["book_id", "member_id", "loaned_at"]
    assert tables["books"].target == "dim_book" and tables["fines"].target == "fact_fines"
    assert tables["books"].tracked == [
        "author_id",
        "title",
        "format",
        "pages",
        "published",
        "rating",
    ]

    def rules(table: str) -> dict[str, dict[str, object]]:
        return {
            r.label: r.model_dump(exclude_none=True, exclude_defaults=True)
            for r in tables[table].quality
        }

    books = rules("books")
    assert books["references(author_id)"]["reference"] == "authors.author_id"
    assert books["references(author_id)"]["action"] == "warn"
    assert books["accepted_values(format)"]["values"] == ["hardcover", "paperback", "ebook"]
    # pages > 0: a strict bound
    assert books["books_pages_check"]["min"] == 0 and books["books_pages_check"]["exclusive_min"]
    assert books["books_rating_check"] | {"name": ""} == {
        "type": "range",
        "name": "",
        "column": "rating",
        "min": 0,
        "max": 5,
    }  # BETWEEN, as PostgreSQL stores it: two bounds
    assert rules("loans")["loans_status_check"]["values"] == ["open", "returned", "lost"]
    members = rules("members")
    assert members["unique(email)"]["action"] == "warn"
    deposit = members["members_deposit_check"]  # deposit > 0 on a numeric
    assert (deposit["type"], deposit["min"], deposit["exclusive_min"]) == ("range", 0, True)
    assert "CHECK loans_check: ((due_date >= (loaned_at)::date)): not translated" in prose
    fines = rules("fines")
    assert fines["fines_amount_check"] == {
        "type": "range",
        "name": "fines_amount_check",
        "column": "amount",
        "min": 0,
    }
    # NOT NULL in the source: the source enforces it, and a null would only date by commit time
    assert "not_null(issued_at)" not in fines
    assert not any(label.startswith("not_null") for label in books)  # the source enforces it
    # business time: the fine's own time, not its loan's (a column of its foreign key)
    assert tables["fines"].event_time == "issued_at"
    assert "event_time: issued_at dates each event" in prose
    assert "Other date and timestamp columns: loaned_at." in prose
    assert tables["reading_room"].event_time == "entered_at"
    # no updated_at-like column: versions keep the commit time, and the comment says so
    assert all(t.effective_from is None for t in tables.values())
    assert "versions are valid from the source commit time of their change" in prose
    assert "fines_book_id_member_id_loaned_at_fkey (book_id, member_id, loaned_at)" in prose
    assert "a table that is both is a dimension" in prose
    assert "keyed into dim_book by book_id, dim_member by member_id" in prose  # fines

    env = {"PGPASSWORD": password}
    config_path = str(folder / "riverbed.yaml")
    for args in (("capture", "--once"), ("run", "--once")):
        result = run_cli(*args, "-c", config_path, env=env)
        assert result.code == 0, result.text
    with library.connect(autocommit=True) as conn:
        conn.execute("update library.books set title = 'Solaris (new edition)' where book_id = 101")
        conn.execute("update library.reading_room set note = 'y' where seat = 4")
    for args in (("capture", "--once"), ("run", "--once")):
        result = run_cli(*args, "-c", config_path, env=env)
        assert result.code == 0, result.text

    def query(sql: str) -> list[dict[str, object]]:
        result = run_cli("query", "--as", "admin", "--format", "json", sql, "-c", config_path)
        assert result.code == 0, result.text
        return json.loads(result.out)  # type: ignore[no-any-return]

    counts = query(
        "select (select count(*) from dim_author) a, (select count(*) from dim_member) m,"
        " (select count(*) from dim_loan) l, (select count(*) from fact_fines) f,"
        " (select count(*) from fact_reading_room) r"
    )
    assert counts == [{"a": 2, "m": 2, "l": 2, "f": 1, "r": 4}]
    # keyed by all its columns, an update is a new key: the old row deleted, the new inserted
    assert query("select seat, note, _op from fact_reading_room order by _lsn, _seq") == [
        {"seat": 3, "note": None, "_op": "L"},
        {"seat": 4, "note": "x", "_op": "L"},
        {"seat": 4, "note": "x", "_op": "D"},
        {"seat": 4, "note": "y", "_op": "I"},
    ]
    # the fine's book and member resolved to their dimensions' surrogate keys
    assert query(
        "select b.title, m.full_name from fact_fines f join dim_book b using (book_key)"
        " join dim_member m using (member_key)"
    ) == [{"title": "The Dispossessed", "full_name": "Ada"}]
    versions = query("select title, is_current_record from dim_book where book_id = 101 order by 1")
    assert versions == [
        {"title": "Solaris", "is_current_record": False},
        {"title": "Solaris (new edition)", "is_current_record": True},
    ]
    # the web app's logins: made on first use, private, and the admin logs in with one
    made = folder / ".riverbed" / "logins" / "admin.password"
    assert made.stat().st_mode & 0o777 == 0o600
    with client(folder / "riverbed.yaml") as web:
        log_in(web, "admin", made.read_text().strip())
        assert web.get("/api/me").json()["principal"] == "admin"


def test_tables_chooses_and_a_dsn_without_password_writes_none(
    library: Database, tmp_path: Path
) -> None:
    code, out = init(tmp_path, library.dsn, "--schema", "library", "--tables", "fines,authors")
    assert code == 0, out
    text = (tmp_path / "riverbed.yaml").read_text()
    assert "\n  password:" not in text
    config = load_project(tmp_path / "riverbed.yaml").config
    # authors is referenced by no table captured here, and the fines' loans are not captured
    assert {name: t.kind for name, t in config.tables.items()} == {
        "authors": "fact",
        "fines": "fact",
    }
    assert "foreign key fines_book_id_member_id_loaned_at_fkey" in text


def test_errors_are_one_line(library: Database, tmp_path: Path) -> None:
    with library.connect(autocommit=True) as conn:
        conn.execute("create schema empty")
    unreachable = f"host=127.0.0.1 port={free_port()} dbname=nowhere user=nobody"
    cases = [
        ((unreachable,), 1, "cannot connect to postgresql://nobody@127.0.0.1"),
        ((library.dsn, "--schema", "nosuch"), 2, "--schema nosuch: no such schema"),
        ((library.dsn, "--schema", "empty"), 2, "--schema empty: the schema has no tables"),
        ((library.dsn, "--schema", "library", "--tables", "loans,nope"), 2, "--tables nope"),
        ((library.dsn, "--schema", "library", "--tables", "visits"), 1, "no table of schema"),
        (("dbname='unclosed",), 2, "not a PostgreSQL connection string"),
    ]
    for args, exit_code, message in cases:
        code, out = init(tmp_path / "x", *args)
        assert code == exit_code, out
        assert message in out and len(out.strip().splitlines()) == 1, out
        assert not (tmp_path / "x" / "riverbed.yaml").exists()

    assert init(tmp_path, library.dsn, "--schema", "library")[0] == 0
    code, out = init(tmp_path, library.dsn, "--schema", "library")
    assert code == 1 and "already exists" in out and "--force" in out
    assert init(tmp_path, library.dsn, "--schema", "library", "--force")[0] == 0


def test_the_written_file_reads_back_every_value_as_it_was() -> None:
    """Names and values YAML would read as something else (on, yes, null, 1.5, quotes, commas)
    come back as the catalog had them; a table whose name riverbed.yaml cannot take is left
    out with the rename that fixes it. No database: the catalog is made by hand."""
    labels = ("yes", "no", "null", "1.5", 'say "hi", ok', "a\\b", *(f"v{i}" for i in range(30)))

    def column(name: str, kind: str = "integer", enum: tuple[str, ...] | None = None) -> Column:
        return Column(name, kind, True, enum)

    flags = Table(
        "app", "flags",
        (column("id"), column("on", "app.mood", labels), column("level"),
         column("rate", "numeric(4,2)")),
        ("id",), "d", (), (),
        (Check("flags_level_check", "CHECK ((level > '-3'::integer))", "level",
               bounds=(Bound(">", -3.0),)),
         Check("flags_rate_check", "CHECK ((rate > 0.5))", "rate", bounds=(Bound(">", 0.5),))),
        (),
    )  # fmt: skip
    events = Table(
        "app", "events", (column("event_id"), column("id"), column("at", "date")), ("event_id",),
        "d", (), (ForeignKey("events_id_fkey", ("id",), "app", "flags", ("id",)),), (), (),
    )  # fmt: skip
    weird = Table("app", "Weird Name", (column("id"),), ("id",), "d", (), (), (), ())
    proposal = propose(Catalog("app", (events, flags, weird)))
    text = config_text(proposal, "host=db dbname=app user=me", has_password=True)
    config = parse_config(text, "<written>")
    assert config.tables["flags"].tracked == ["on", "level", "rate"]
    rules = {r.label: r for r in config.tables["flags"].quality}
    assert rules["accepted_values(on)"].values == list(labels)
    level, rate = rules["flags_level_check"], rules["flags_rate_check"]
    assert (level.min, level.exclusive_min) == (-3, True)  # level > -3
    assert (rate.min, rate.exclusive_min) == (0.5, True)  # rate > 0.5
    assert "Weird Name" not in config.tables
    assert 'alter table app."Weird Name" rename to weird_name;' in text
    assert max(len(line) for line in text.splitlines()) <= 100
    # the log file, where a user looks for it, and where to change it
    assert str(config.logs.path) == ".riverbed/logs/riverbed.jsonl" and "\nlogs:\n" in text


def test_each_table_gets_the_column_that_dates_its_rows() -> None:
    """A fact's event_time is the column that says when the event happened (never one that
    moves later, unless the table is named after that event); a dimension's effective_from is
    its updated_at-like column; without one, no key, and the comment says the commit time dates
    the rows. A nullable pick gets a not_null warn rule. No database: the catalog is by hand."""

    def column(name: str, kind: str = "integer", not_null: bool = True) -> Column:
        return Column(name, kind, not_null, None)

    def table(name: str, *columns: Column, refs: tuple[str, ...] = ()) -> Table:
        fks = tuple(ForeignKey(f"{name}_{r}_fkey", (r,), "app", "customers", (r,)) for r in refs)
        key = columns[0].name
        return Table("app", name, columns, (key,), "d", (), fks, (), ())

    stamp, day = "timestamp with time zone", "date"
    catalog = Catalog(
        "app",
        (
            table(
                "customers",
                column("customer_id"),
                column("joined_on", day),
                column("last_modified", "timestamp without time zone", not_null=False),
            ),
            table(
                "orders",
                column("order_id"),
                column("customer_id"),
                column("updated_at", stamp),
                column("due_on", day),
                column("ordered_at", stamp),
                refs=("customer_id",),
            ),
            table(
                "returns",
                column("return_id"),
                column("customer_id"),
                column("updated_at", stamp),
                column("returned_at", stamp, not_null=False),
                refs=("customer_id",),
            ),
            table("audits", column("audit_id"), column("modified_at", stamp)),
            table("pings", column("ping_id"), column("note", "text")),
        ),
    )
    text = config_text(propose(catalog), "host=db dbname=app", has_password=False)
    prose = " ".join(line.strip().lstrip("#").strip() for line in text.splitlines())
    tables = parse_config(text, "<written>").tables
    assert {name: (t.event_time, t.effective_from) for name, t in tables.items()} == {
        "customers": (None, "last_modified"),
        "orders": ("ordered_at", None),
        "returns": ("returned_at", None),  # the table is named after the event
        "audits": (None, None),  # modified_at moves with each change
        "pings": (None, None),
    }
    assert (
        "event_time: ordered_at dates each event (its event_ts, date_key, and the dimension "
        "versions it keys into): its name says when the event happened. Other date and timestamp "
        "columns: updated_at, due_on (named like a later time or a change)." in prose
    )
    assert "effective_from: a version is valid from its row's last_modified" in prose
    assert "remove the line to date versions by the source commit time" in prose
    assert (
        "event_time: not set, its date and timestamp columns (modified_at) are named like a "
        "later time or a change" in prose
    )
    assert "event_time: not set, it has no date or timestamp column" in prose
    assert "To date events by a column: event_time: COLUMN" in prose

    def not_null(name: str) -> dict[str, str]:
        return {r.column: r.action for r in tables[name].quality if r.type == "not_null"}

    # nullable picks warn (a null falls back to the commit time); NOT NULL ones the source keeps
    assert not_null("customers") == {"last_modified": "warn"}
    assert not_null("returns") == {"customer_id": "quarantine", "returned_at": "warn"}
    assert not_null("orders") == {"customer_id": "quarantine"}
