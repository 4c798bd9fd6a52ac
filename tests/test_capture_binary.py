"""Binary-mode capture lands exactly what text-mode capture lands: two projects read the same
WAL through slots of their own, one with ``capture.binary: false``, and their lakes must hold
the same rows, values and types, change for change. Tables with a column whose binary form
Riverbed does not read (a domain, a composite) are still captured exactly: the stream keeps to
text, whether the catalog says so at the start or a Relation message says so on the way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import psycopg
import pytest
from capture_support import lake_changes

from conftest import Database, write_config
from riverbed.capture import changes as changes_module
from riverbed.capture.runner import run_capture
from riverbed.config import load_project
from riverbed.lake.pgbinary import binary_to_arrow

DDL = """
create schema bin;
create type bin.mood as enum ('sad', 'ok', 'it''s "complicated"');
create table bin.t (
  id int8 primary key, c_int2 int2, c_int4 int4, c_float4 float4, c_float8 float8,
  c_num12 numeric(12,2), c_num38 numeric(38,10), c_num numeric, c_bool bool,
  c_text text, c_varchar varchar(20), c_char char(3), c_date date, c_time time,
  c_ts timestamp, c_tstz timestamptz, c_uuid uuid, c_bytea bytea, c_json json,
  c_jsonb jsonb, c_mood bin.mood, c_big text
);
alter table bin.t alter column c_big set storage external;
"""
COLUMNS = (
    "id, c_int2, c_int4, c_float4, c_float8, c_num12, c_num38, c_num, c_bool, c_text,"
    " c_varchar, c_char, c_date, c_time, c_ts, c_tstz, c_uuid, c_bytea, c_json, c_jsonb,"
    " c_mood, c_big"
)
ROWS = [
    "(1, 1, 2, 1.5, 2.25, 12.34, 1.5, 3.14159, true, 'hello', 'world', 'ab', '2024-02-29',"
    " '12:34:56.5', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+01',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', '{\"a\":  1}', '{\"b\": [1, 2]}',"
    " 'ok', repeat('x', 5000))",
    "(2, -32768, -2147483648, 'NaN', '-Infinity', -9999999999.99,"
    " -9999999999999999999999999999.9999999999,"
    " -123456789012345678901234567890.123456789012345678901234567890, false, 'ünïcødé 🚀',"
    " '', 'é', '1999-12-31', '00:00:00', '1999-12-31 23:59:59.000001', '1850-06-01 00:00:00+00',"
    " 'ffffffff-ffff-ffff-ffff-ffffffffffff', '', '[]', '\"é\"', 'it''s \"complicated\"',"
    " repeat('y', 5000))",
    "(3, null, null, null, null, null, null, null, null, null, null, null, null, null, null,"
    " null, null, null, null, null, null, null)",
    "(4, 0, 0, 'Infinity', 'NaN', 0, 0.0000000001, 'NaN', true, 'NULL', 'x', '   ', '0001-01-01',"
    " '23:59:59.999999', '0001-01-01 00:00:00', '1901-12-13 20:45:52+00',"
    " '00000000-0000-0000-0000-000000000000', '\\x00', 'null', 'null', 'sad', null)",
    "(5, 7, 7, -0.0, -0.0, -0.01, -1, '-Infinity', false, 'z', 'z', 'z', '1970-01-01',"
    " '00:00:01', '1970-01-01 00:00:00', '2000-01-01 00:00:00+00',"
    " '123e4567-e89b-12d3-a456-426614174000', '\\x5c30', '{}', '{}', 'ok', 'short')",
]
# values with no Arrow form: the file holding them keeps those columns as PostgreSQL's text
ODD_ROWS = [
    "(6, 1, 1, 1, 1, 'NaN', 1, 'Infinity', true, 'a', 'a', 'a', 'infinity', '24:00:00',"
    " '-infinity', 'infinity', null, null, null, null, 'ok', null)",
    "(7, 1, 1, 1, 1, 1, 1, 1, true, 'a', 'a', 'a', '0044-03-15 BC', '01:00:00',"
    " '0044-03-15 12:00:00.25 BC', '10000-01-01 00:00:00+00', null, null, null, null, 'ok', null)",
]


def _project(folder: Path, database: Database, name: str, binary: bool, tables: str) -> Path:
    folder.mkdir()
    text = (
        f'source:\n  dsn: "{database.dsn}"\n  schema: bin\n  slot: {name}\n'
        f"  publication: {name}\n"
        "lake:\n  path: lake\n  max_rows: 5000\n  max_seconds: 1\nstate:\n  path: state.db\n"
        f"capture:\n  heartbeat_seconds: 1\n  status_interval_seconds: 1\n"
        f"  binary: {'true' if binary else 'false'}\n" + tables
    )
    return write_config(folder, text)


def _tables(*names: str) -> str:
    return "tables:\n" + "".join(
        f"  {n}:\n    kind: fact\n    target: fact_{n}\n    keys: [id]\n" for n in names
    )


class _Spy:
    """Counts the columns converted from binary form (the writer runs in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.columns = 0

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.columns += 1
            return binary_to_arrow(*args, **kwargs)

        monkeypatch.setattr(changes_module, "binary_to_arrow", counting)


def _capture(config: Path) -> None:
    run_capture(load_project(config), follow=False)


def _canon(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def one(value: Any) -> Any:
        if isinstance(value, float):
            return "NaN" if math.isnan(value) else (value, math.copysign(1, value))
        return value

    return [{k: one(v) for k, v in row.items()} for row in rows]


def _same_lakes(text: Path, binary: Path, table: str) -> list[dict[str, Any]]:
    for resolve in (False, True):
        got, want = lake_changes(binary, table, resolve), lake_changes(text, table, resolve)
        assert len(got) == len(want)
        for g, w in zip(_canon(got), _canon(want), strict=True):
            assert g == w, (g, w)
    return lake_changes(binary, table, False)


def test_binary_capture_lands_exactly_what_text_capture_does(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(DDL)
    text = _project(tmp_path / "text", database, "rb_text", False, _tables("t"))
    binary = _project(tmp_path / "binary", database, "rb_binary", True, _tables("t"))
    _capture(text)
    _capture(binary)  # both slots exist before any change: both see the same WAL
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        for row in ROWS:
            conn.execute(f"insert into bin.t ({COLUMNS}) values {row}")
        conn.execute(f"insert into bin.t ({COLUMNS}) values {', '.join(ODD_ROWS)}")
        # the TOASTed column untouched ('u'), then the key changed (old key + new row)
        conn.execute("update bin.t set c_int4 = 99 where id in (1, 2)")
        conn.execute("update bin.t set id = 10, c_text = 'moved' where id = 1")
        conn.execute("delete from bin.t where id = 4")
        # a transaction larger than max_rows (spilled as it streams in), and an aborted one
        conn.execute(
            f"insert into bin.t ({COLUMNS}) select g, g % 100, g, g / 3.0, g / 7.0,"
            " g / 100.0, -g / 1000.0, g * 1.5, g % 2 = 0, 'row ' || g, 'v' || g, 'c',"
            " date '1990-01-01' + g, time '00:00' + g * interval '1 second',"
            " timestamp '1995-06-01' + g * interval '1 minute', now() - g * interval '1 hour',"
            " gen_random_uuid(), int8send(g), '{\"g\": 1}', jsonb_build_object('g', g),"
            " 'ok', null from generate_series(100, 12099) g"
        )
        with conn.transaction():
            conn.execute("insert into bin.t (id) select g from generate_series(20000, 20100) g")
            raise psycopg.Rollback()
    converted_before = spy.columns
    _capture(text)
    assert spy.columns == converted_before  # text mode never reads binary
    _capture(binary)
    assert spy.columns > converted_before  # and binary mode did
    changes = _same_lakes(text, binary, "t")
    assert len(changes) == len(ROWS) + len(ODD_ROWS) + 2 + 2 + 1 + 12_000
    assert not [c for c in changes if c["id"] >= 20000]
    toasted = [c for c in changes if c["_op"] == "U" and c["id"] in (2,)]
    assert toasted and toasted[0]["_toast_unchanged"] == ["c_big"]


def test_a_column_binary_mode_cannot_read_keeps_the_stream_in_text(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A domain over int4 and a composite have binary forms Riverbed does not read: known from
    the catalog at the start (table d), or only from a Relation message of a column dropped
    since (table c), the stream keeps to text and lands what text mode lands."""
    spy = _Spy(monkeypatch)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute(
            "create schema bin; create domain bin.positive as int4 check (value > 0);"
            " create type bin.pair as (a int4, b text);"
            " create table bin.d (id int4 primary key, p bin.positive, n numeric(12,2));"
            " create table bin.c (id int4 primary key, n numeric(12,2));"
        )
    tables = _tables("d", "c")
    text = _project(tmp_path / "text", database, "rb_text", False, tables)
    binary = _project(tmp_path / "binary", database, "rb_binary", True, tables)
    _capture(text)
    _capture(binary)
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("insert into bin.d values (1, 5, 1.25), (2, null, -3)")
        conn.execute("alter table bin.c add column pr bin.pair")
        conn.execute("insert into bin.c values (1, 2.5, row(1, 'x y')), (2, null, null)")
        conn.execute("alter table bin.c drop column pr")
        conn.execute("insert into bin.c values (3, 7)")
    _capture(text)
    _capture(binary)
    assert spy.columns == 0
    assert [c["p"] for c in _same_lakes(text, binary, "d")] == ["5", None]
    assert len(_same_lakes(text, binary, "c")) == 3
    # with the domain gone the stream is binary again, from where the lake stands
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("alter table bin.d drop column p")
        conn.execute("insert into bin.c values (4, 8.5)")
    _capture(text)
    _capture(binary)
    assert spy.columns > 0
    assert len(_same_lakes(text, binary, "c")) == 4
