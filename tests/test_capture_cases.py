"""`riverbed capture` case by case: every column type, transaction shapes, unchanged TOAST,
schema evolution, truncate, large transactions, an S3 lake, WAL safety, status, bad input.

Everything runs the command line as a user would and checks what lands in the lake against an
oracle that does not use Riverbed's decoder: the source tables themselves (SELECT through
psycopg, or the values' own ``::text``), the audit triggers of ``capture_support``, and the
server's own view of the replication slot.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.fs as pafs
import pytest
from capture_support import (
    audit_by_xid,
    capture_config,
    install_audit,
    lake_by_xid,
    lake_changes,
    normalise,
    normalise_row,
    replay,
    source_rows,
)

from conftest import Database, free_port, run_cli, s3_bucket, start_cli
from riverbed.config import load_project
from riverbed.lake.reader import read_changes
from riverbed.lake.storage import open_storage
from riverbed.state import SQLiteStore, StateStore

# --- helpers ------------------------------------------------------------------------------


def project_config(
    tmp_path: Path,
    database: Database,
    schema: str,
    tables: dict[str, str],
    *,
    max_rows: int | None = None,
) -> Path:
    """A riverbed.yaml capturing ``schema``'s ``tables`` (name -> key column), all facts."""
    block = "tables:\n" + "".join(
        f"  {name}:\n    kind: fact\n    target: fact_{name}\n    keys: [{key}]\n"
        for name, key in tables.items()
    )
    config = capture_config(tmp_path, database, tables=block)
    text = config.read_text().replace("source:\n", f"source:\n  schema: {schema}\n", 1)
    if max_rows is not None:
        text = text.replace("max_rows: 5000", f"max_rows: {max_rows}")
    config.write_text(text)
    return config


def capture(config: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("capture", *args, "--json", "-c", str(config), env=env, timeout=300)
    assert result.code == 0, result.text
    assert "Traceback" not in result.text
    return json.loads(result.out)  # type: ignore[no-any-return]


def oracle(database: Database) -> psycopg.Connection:
    """A plain psycopg connection in UTC: the independent view of the source."""
    return psycopg.connect(database.dsn, autocommit=True, options="-c TimeZone=UTC")


def xid_of(conn: psycopg.Connection) -> int:
    """The current transaction's id as pgoutput sends it (32 bits, without the epoch)."""
    row = conn.execute("select txid_current()").fetchone()
    assert row is not None
    return int(row[0]) & 0xFFFFFFFF


def manifest_of(config: Path) -> StateStore:
    project = load_project(config)
    return SQLiteStore(project.path(project.config.state.path))


def schema_versions(config: Path, table: str) -> list[int]:
    manifest = manifest_of(config)
    try:
        return [v.version for v in manifest.lake.schema_versions(table)]
    finally:
        manifest.close()


def lake_state(config: Path, table: str, keys: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return replay(lake_changes(config, table), keys)


def assert_replay_equals_source(
    config: Path, conn: psycopg.Connection, schema: str, table: str, keys: list[str]
) -> None:
    lake = {
        tuple(normalise(k) for k in key): normalise_row(row)
        for key, row in lake_state(config, table, keys).items()
    }
    source = source_rows(conn, schema, table, keys)
    assert lake.keys() == source.keys(), f"{table}: keys differ"
    for key, row in source.items():
        got = {name: lake[key].get(name) for name in row}
        assert got == row, f"{table} {key}: lake {got} != source {row}"


def streamed(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in changes if c["_xid"] is not None]


def start_follow(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return start_cli("capture", "--follow", "--json", "-c", str(config), env=env)


def wait_streaming(database: Database, proc: subprocess.Popen[str], deadline: float = 120) -> None:
    """Until the capture process holds its slot (the walsender is streaming to it)."""
    until = time.monotonic() + deadline
    with database.connect(autocommit=True) as conn:
        while not conn.execute(
            "select count(*) from pg_replication_slots where database = current_database()"
            " and active"
        ).fetchone()[0]:  # type: ignore[index]
            if proc.poll() is not None:
                pytest.fail(f"capture exited early: {proc.communicate()[1][-3000:]}")
            assert time.monotonic() < until, "capture never started streaming"
            time.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def poll(
    check: Callable[[], bool],
    what: str,
    deadline: float = 60,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Wait for a liveness condition (never a timing assertion: the deadline is generous)."""
    until = time.monotonic() + deadline
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"capture exited while waiting for {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < until, f"gave up waiting for {what}"
        time.sleep(0.25)


def canon(value: Any) -> Any:
    """Equal values compare equal: NaN is NaN, lists element by element."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return [canon(v) for v in value]
    return value


# --- 1. every column type -----------------------------------------------------------------

TYPES_DDL = """
create schema typ;
create type typ.mood as enum ('sad', 'ok', 'happy', 'it''s "complicated", ok?');
create table typ.everything (
  id int4 primary key,
  c_int2 int2, c_int4 int4, c_int8 int8,
  c_num12 numeric(12,2), c_num38 numeric(38,10), c_num numeric,
  c_float4 float4, c_float8 float8,
  c_text text, c_varchar varchar(20), c_char char(3),
  c_bool bool, c_date date, c_ts timestamp, c_tstz timestamptz, c_time time,
  c_uuid uuid, c_json json, c_jsonb jsonb, c_bytea bytea,
  c_int4s int4[], c_texts text[], c_mood typ.mood, c_interval interval
);
"""
TYPE_COLUMNS = [
    "c_int2", "c_int4", "c_int8", "c_num12", "c_num38", "c_num", "c_float4", "c_float8",
    "c_text", "c_varchar", "c_char", "c_bool", "c_date", "c_ts", "c_tstz", "c_time",
    "c_uuid", "c_json", "c_jsonb", "c_bytea", "c_int4s", "c_texts", "c_mood", "c_interval",
]  # fmt: skip
# What the lake holds is compared with what PostgreSQL itself says, in the lake's Python form:
# types Riverbed keeps as text against the value's own ::text, float4 widened exactly to float8.
ORACLE_EXPR = {
    "c_num": "c_num::text",
    "c_float4": "c_float4::float8",
    "c_uuid": "c_uuid::text",
    "c_json": "c_json::text",
    "c_jsonb": "c_jsonb::text",
    "c_mood": "c_mood::text",
    "c_interval": "c_interval::text",
}
INSERT_TYPES = (
    "insert into typ.everything (id, " + ", ".join(TYPE_COLUMNS) + ") values (%s"
    + ", %s" * len(TYPE_COLUMNS) + ")"
)  # fmt: skip
# fmt: off
ORDINARY = [
    (1, "1", "2", "3", "12.34", "1.5", "3.14159", "1.5", "2.25", "hello", "world", "abc",
     "t", "2024-02-29", "2024-02-29 12:34:56.789", "2024-02-29 12:34:56.789+01", "12:34:56",
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"a": 1}', '{"b": [1, 2]}', "\\xdeadbeef",
     "{1,2,3}", "{x,y}", "happy", "1 day 02:00:00"),
    (2, "-1", "-2", "-3", "-0.01", "-0.0000000001", "-42", "-0.5", "-1e-10", "with 'quotes'",
     "", "a", "f", "1999-12-31", "1999-12-31 23:59:59", "1999-12-31 23:59:59-08", "00:00:01",
     "00000000-0000-0000-0000-000000000000", "[]", "{}", "\\x", "{}", "{}", "sad",
     "-1 mons"),
    (3,) + (None,) * len(TYPE_COLUMNS),
]
EDGES = [
    (10, "-32768", "-2147483648", "-9223372036854775808", "-9999999999.99",
     "-9999999999999999999999999999.9999999999",
     "-123456789012345678901234567890.123456789012345678901234567890", "-Infinity",
     "-1.7976931348623157e308", "",
     "exactly twenty chars", "", "t", "0001-01-01", "0001-01-01 00:00:00",
     "0001-01-01 00:00:00+00", "00:00:00", "ffffffff-ffff-ffff-ffff-ffffffffffff", "null",
     '"just a string"', "\\x00", "{-2147483648,NULL,2147483647}",
     '{"a,b","c\\"d","e\\\\f","NULL",NULL,""," sp ","{x}"}', "ok",
     "-178000000 years"),
    (11, "32767", "2147483647", "9223372036854775807", "9999999999.99",
     "9999999999999999999999999999.9999999999", "NaN", "NaN", "NaN",
     "ünïcødé 🚀\ttab\nnewline\r\\back \"dq\" 'sq', comma", "ünïcødé 🚀", "é", "f",
     "9999-12-31", "9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999+00",
     "23:59:59.999999", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12",
     '{"nested": {"deep": [1, 2.5e300, null, true, "\\u00e9"]},  "spacing kept": 1}',
     '{"z": 1, "a": [1e100, -0.5], "e": "\\u00e9"}', "\\x00ff00" + "ab" * 3000,
     "{2147483647}", "{ü,🚀,\"\"}", 'it\'s "complicated", ok?',
     "1 year 2 mons -3 days 04:05:06.789"),
    (12, "0", "0", "0", "0", "0", "Infinity", "Infinity", "5e-324", "NULL", "\\N", "   ",
     "t", "2000-02-29", "1970-01-01 00:00:00", "2024-03-10 02:30:00-05", "12:00:00.000001",
     "123e4567-e89b-12d3-a456-426614174000", '"str"', "null", "\\x5c30", "{NULL}",
     '{NULL,"null"}', "happy", "00:00:00"),
    (13, None, "7", None, "0.01", None, "1e-50", "3.4028235e38", None, None, "x", None,
     None, None, "2020-01-01 00:00:00", None, None, None, None, '[1, "two", {"3": [4]}]',
     None, None, "{NULL}", None, "1 day -00:00:01"),
]
# fmt: on


def type_oracle_rows(conn: psycopg.Connection) -> dict[int, dict[str, Any]]:
    columns = ", ".join(f"{ORACLE_EXPR.get(c, c)} as {c}" for c in TYPE_COLUMNS)
    cur = conn.execute(f"select id, {columns} from typ.everything")
    names = [d.name for d in cur.description]  # type: ignore[union-attr]
    rows = {}
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        rows[row["id"]] = row
    return rows


def copy_values(source: int, target: int) -> str:
    columns = ", ".join(TYPE_COLUMNS)
    return (
        f"update typ.everything set ({columns}) ="
        f" (select {columns} from typ.everything where id = {source}) where id = {target}"
    )


def test_every_column_type_snapshot_and_stream(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute(TYPES_DDL)
        for row in ORDINARY:
            conn.execute(INSERT_TYPES, row)
    config = project_config(tmp_path, database, "typ", {"everything": "id"})
    first = capture(config, "--once")
    assert first["snapshot_rows"] == {"everything": len(ORDINARY)}

    with oracle(database) as conn:
        for row in EDGES:
            conn.execute(INSERT_TYPES, row)
        with conn.transaction():
            # a snapshot row takes edge values, an edge row goes back to ordinary ones
            conn.execute(copy_values(source=11, target=1))
            conn.execute(copy_values(source=2, target=12))
        nulls = ", ".join(f"{c} = null" for c in TYPE_COLUMNS)
        conn.execute(f"update typ.everything set {nulls} where id = 2")  # a snapshot row
        conn.execute(copy_values(source=10, target=3))  # from NULL to values
        conn.execute("delete from typ.everything where id = 13")
        conn.execute("update typ.everything set c_text = 'only this' where id = 10")
    second = capture(config, "--once")
    assert second["rows"] == len(EDGES) + 6

    changes = lake_changes(config, "everything")
    assert [c["_op"] for c in changes[: len(ORDINARY)]] == ["L"] * len(ORDINARY)
    lake = replay(changes, ["id"])
    with oracle(database) as conn:
        source = type_oracle_rows(conn)
    assert sorted(k[0] for k in lake) == sorted(source)
    for (key,), row in lake.items():
        for column in TYPE_COLUMNS:
            got, want = row[column], source[key][column]
            if column in ("c_json", "c_jsonb") and got is not None:
                assert json.loads(got) == json.loads(want), (key, column)
            assert canon(got) == canon(want), f"id {key} {column}: lake {got!r} != source {want!r}"

    # the lake keeps each type as the documented Arrow type, in snapshot and stream files alike
    project = load_project(config)
    manifest = manifest_of(config)
    try:
        table = read_changes(
            open_storage(project.config.lake, project.root), manifest, "everything"
        )
        assert len(manifest.lake.schema_versions("everything")) == 1  # the stream saw no new shape
    finally:
        manifest.close()
    types = {f.name: str(f.type) for f in table.schema}
    assert types["c_int2"] == "int16" and types["c_int8"] == "int64"
    assert types["c_num12"] == "decimal128(12, 2)" and types["c_num38"] == "decimal128(38, 10)"
    assert types["c_num"] == "string" and types["c_float4"] == "float"
    assert types["c_tstz"] == "timestamp[us, tz=UTC]" and types["c_ts"] == "timestamp[us]"
    assert types["c_bytea"] == "binary"
    assert str(table.schema.field("c_int4s").type.value_type) == "int32"
    assert str(table.schema.field("c_texts").type.value_type) == "string"


def test_char_n_keeps_its_padding_in_snapshot_and_stream(
    database: Database, tmp_path: Path
) -> None:
    """The snapshot once read char(n) through ::text, which drops the padding the stream keeps."""
    with oracle(database) as conn:
        conn.execute("create schema pad; create table pad.t (id int primary key, c char(5))")
        conn.execute("insert into pad.t values (1, 'ab'), (2, ''), (3, null)")
    config = project_config(tmp_path, database, "pad", {"t": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("insert into pad.t values (4, 'ab'), (5, '')")
    capture(config, "--once")
    lake = {key[0]: row["c"] for key, row in replay(lake_changes(config, "t"), ["id"]).items()}
    assert lake == {1: "ab   ", 2: "     ", 3: None, 4: "ab   ", 5: "     "}


def test_values_without_an_arrow_equivalent_are_kept_as_text(
    database: Database, tmp_path: Path
) -> None:
    """NaN numerics, infinite or BC dates, 24:00, multi-dimensional arrays: a file whose value
    has no exact Arrow form keeps that column as PostgreSQL's text, and the reader still reads
    the table across typed and text files."""
    with oracle(database) as conn:
        conn.execute(
            "create schema odd; create table odd.v (id int primary key, n numeric(12,2),"
            " d date, ts timestamptz, t time, a int4[])"
        )
        conn.execute(
            "insert into odd.v values"
            " (1, 12.34, '2024-01-01', '2024-01-01 10:00:00+00', '12:34:56', '{1,2}')"
        )
    config = project_config(tmp_path, database, "odd", {"v": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute(
            "insert into odd.v values (2, 'NaN', 'infinity', '-infinity', '24:00:00',"
            " '{{1,2},{3,4}}')"
        )
        conn.execute(
            "insert into odd.v values (3, 1.5, '0044-03-15 BC', '10000-01-01 00:00:00+00',"
            " '01:00:00', '[0:1]={1,2}')"
        )
        text = {
            r[0]: r[1:]
            for r in conn.execute(
                "select id, n::text, d::text, ts::text, t::text, a::text from odd.v"
            )
        }
        typed = conn.execute("select n, d, ts, t, a from odd.v where id = 1").fetchone()
    capture(config, "--once")
    lake = {c["id"]: c for c in lake_changes(config, "v")}
    assert sorted(lake) == [1, 2, 3]
    columns = ["n", "d", "ts", "t", "a"]
    for key in (2, 3):  # arrived as text: exactly what PostgreSQL prints
        assert [lake[key][c] for c in columns] == list(text[key]), key
    # the typed snapshot row, read as text next to them, still denotes the same values
    row = lake[1]
    assert Decimal(str(row["n"])) == typed[0]  # type: ignore[index]
    assert str(row["d"]) == "2024-01-01"
    assert datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00")) == typed[2]  # type: ignore[index]
    assert dtime.fromisoformat(str(row["t"])) == typed[3]  # type: ignore[index]
    assert row["a"] in ("{1,2}", [1, 2]) or json.loads(row["a"]) == [1, 2]


def test_snapshot_keeps_values_without_an_arrow_equivalent_as_text(
    database: Database, tmp_path: Path
) -> None:
    """The snapshot's binary COPY meets the same values (NaN in a scaled numeric, infinite
    dates and timestamps, 24:00): the chunk is copied again with those columns as PostgreSQL's
    text, exactly as the stream would carry them, and the ordinary rows stay exact."""
    with oracle(database) as conn:
        conn.execute(
            "create schema odd2; create table odd2.v (id int primary key, n numeric(12,2),"
            " d date, ts timestamptz, t time, a int4[])"
        )
        conn.execute(
            "insert into odd2.v values"
            " (1, 12.34, '2024-01-01', '2024-01-01 10:00:00+00', '12:34:56', '{1,2}'),"
            " (2, 'NaN', 'infinity', '-infinity', '24:00:00', '{{1,2},{3,4}}'),"
            " (3, -0.5, '0044-03-15 BC', '2024-06-01 00:00:00.5+00', '01:00:00', null)"
        )
        text = {
            r[0]: r[1:]
            for r in conn.execute(
                "select id, n::text, d::text, ts::text, t::text, a::text from odd2.v"
            )
        }
    config = project_config(tmp_path, database, "odd2", {"v": "id"})
    capture(config, "--once")
    lake = {c["id"]: c for c in lake_changes(config, "v")}
    assert sorted(lake) == [1, 2, 3]
    assert [lake[2][c] for c in ["n", "d", "ts", "t"]] == list(text[2][:4])
    assert Decimal(str(lake[3]["n"])) == Decimal("-0.50")
    assert str(lake[1]["d"]) == "2024-01-01"


# --- 2. transaction shapes ----------------------------------------------------------------

TX_DDL = """
create schema tx;
create table tx.items (id int primary key, n int not null default 0, note text);
create table tx.other (id int primary key, v text);
insert into tx.items (id, note) select g, 'item ' || g from generate_series(1, 10) g;
insert into tx.other values (1, 'one');
"""


def test_transaction_shapes(database: Database, tmp_path: Path) -> None:
    keys = ["id"]
    with oracle(database) as conn:
        conn.execute(TX_DDL)
    config = project_config(tmp_path, database, "tx", {"items": "id", "other": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        install_audit(conn, "tx", ["items", "other"])
        xids: dict[str, int] = {}
        with conn.transaction():  # several statements over two tables
            xids["multi"] = xid_of(conn)
            conn.execute("insert into tx.items (id, note) values (11, 'new'), (12, 'new')")
            conn.execute("update tx.items set note = 'changed' where id = 1")
            conn.execute("delete from tx.items where id = 2")
            conn.execute("insert into tx.other values (2, 'two')")
            conn.execute("update tx.other set v = 'uno' where id = 1")
            conn.execute("update tx.items set n = n + 100 where id in (11, 12)")
        with conn.transaction():  # twenty updates of one row
            xids["many"] = xid_of(conn)
            for _ in range(20):
                conn.execute("update tx.items set n = n + 1 where id = 3")
        with conn.transaction():  # delete and re-insert of one key in one transaction
            xids["reinsert"] = xid_of(conn)
            conn.execute("delete from tx.items where id = 4")
            conn.execute("insert into tx.items (id, n, note) values (4, 44, 'again')")
        with conn.transaction():  # ... and across transactions
            xids["delete5"] = xid_of(conn)
            conn.execute("delete from tx.items where id = 5")
        with conn.transaction():
            xids["insert5"] = xid_of(conn)
            conn.execute("insert into tx.items (id, n, note) values (5, 55, 'back')")
        with conn.transaction():  # primary-key change
            xids["rekey"] = xid_of(conn)
            conn.execute("update tx.items set id = id + 1000 where id in (6, 7)")
        with conn.transaction():
            xids["rekey_and_change"] = xid_of(conn)
            conn.execute("update tx.items set id = 2008, note = 'moved' where id = 8")
        conn.execute("delete from tx.items where id = 11")
    capture(config, "--once")

    items = lake_changes(config, "items")
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "tx", "items", keys)
        assert_replay_equals_source(config, conn, "tx", "other", keys)
        audit = {t: audit_by_xid(conn, t, keys) for t in ("items", "other")}
    lake = {t: lake_by_xid(lake_changes(config, t), keys) for t in ("items", "other")}
    rekeyed = {xids["rekey"], xids["rekey_and_change"]}
    for table in ("items", "other"):
        # every audited transaction is in the stream and nothing else is
        assert set(lake[table]) == set(audit[table]), table
        for xid, changes in audit[table].items():
            if xid not in rekeyed:
                assert lake[table][xid] == changes, f"{table} xid {xid}"

    # one _lsn per transaction, increasing in commit order; one _seq per change
    rows = streamed(items)
    lsn_of = {c["_xid"]: c["_lsn"] for c in rows}
    assert len(set(lsn_of.values())) == len({c["_lsn"] for c in rows}) == len(lsn_of)
    in_commit_order = [lsn_of[xid] for xid in xids.values()]
    assert in_commit_order == sorted(in_commit_order) == sorted(set(in_commit_order))
    assert len({(c["_lsn"], c["_seq"]) for c in rows}) == len(rows)
    commit_times = [c["_commit_ts"] for c in rows]
    assert commit_times == sorted(commit_times)
    # a transaction over two tables carries the same position in both
    other = streamed(lake_changes(config, "other"))
    assert {c["_lsn"] for c in other} == {lsn_of[xids["multi"]]}

    many = [c for c in rows if c["_xid"] == xids["many"]]
    assert [c["_op"] for c in many] == ["U"] * 20
    assert [c["n"] for c in many] == list(range(1, 21))
    assert len({c["_lsn"] for c in many}) == 1
    assert all(a["_seq"] < b["_seq"] for a, b in zip(many, many[1:], strict=False))

    reinsert = [(c["_op"], c["id"], c["n"]) for c in rows if c["_xid"] == xids["reinsert"]]
    assert reinsert == [("D", 4, None), ("I", 4, 44)]
    across = [(c["_op"], c["id"]) for c in rows if c["_xid"] in (xids["delete5"], xids["insert5"])]
    assert across == [("D", 5), ("I", 5)]

    # a key change is the old key's end (D) followed by the new key's row (I)
    rekey = [(c["_op"], c["id"]) for c in rows if c["_xid"] == xids["rekey"]]
    assert sorted(rekey[0::2]) == [("D", 6), ("D", 7)]
    assert [(op, key) for op, key in rekey[1::2]] == [("I", k + 1000) for _, k in rekey[0::2]]
    moved = [(c["_op"], c["id"], c["note"]) for c in rows if c["_xid"] == xids["rekey_and_change"]]
    assert moved == [("D", 8, None), ("I", 2008, "moved")]
    full = [c for c in rows if c["_xid"] == xids["rekey"] and c["_op"] == "I"]
    assert all(c["note"] == f"item {c['id'] - 1000}" for c in full)  # the whole new row


# --- 3. unchanged TOAST values ------------------------------------------------------------

TOAST_DDL = """
create schema toast;
create table toast.docs (id int primary key, title text, body text);
create table toast.docs_full (id int primary key, title text, body text);
alter table toast.docs alter column body set storage external;
alter table toast.docs_full alter column body set storage external;
alter table toast.docs_full replica identity full;
"""


def big(seed: int) -> str:
    """An incompressible-looking value far above the TOAST threshold (~32 kB)."""
    import hashlib

    return "".join(hashlib.md5(f"{seed}-{i}".encode()).hexdigest() for i in range(1000))


def toast_round(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"update toast.{table} set title = 't1' where id = 1")  # snapshot row
    conn.execute(f"update toast.{table} set title = 't1 again' where id = 1")  # twice in a row
    conn.execute(f"insert into toast.{table} values (3, 'three', %s)", (big(3),))
    conn.execute(f"update toast.{table} set title = 't3' where id = 3")  # streamed row
    conn.execute(f"update toast.{table} set body = %s where id = 2", (big(22),))
    conn.execute(f"update toast.{table} set title = 't2' where id = 2")  # after a body change
    with conn.transaction():
        conn.execute(f"insert into toast.{table} values (4, 'four', %s)", (big(4),))
        conn.execute(f"update toast.{table} set title = 't4' where id = 4")  # same transaction
    conn.execute(f"update toast.{table} set title = null where id = 1")


def test_unchanged_toast_is_marked_and_resolved(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute(TOAST_DDL)
        for table in ("docs", "docs_full"):
            conn.execute(
                f"insert into toast.{table} values (1, 'one', %s), (2, 'two', %s)", (big(1), big(2))
            )
        stored = conn.execute(
            "select pg_column_size(body), octet_length(body) from toast.docs where id = 1"
        ).fetchone()
        assert stored is not None and stored[1] > 8192
    config = project_config(tmp_path, database, "toast", {"docs": "id", "docs_full": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        for table in ("docs", "docs_full"):
            toast_round(conn, table)
    capture(config, "--once")

    title_only = {"t1", "t1 again", "t3", "t2", None}
    # REPLICA IDENTITY DEFAULT: the source did not send the body; the lake says so, never null
    raw = [
        c for c in streamed(lake_changes(config, "docs", resolve_toast=False)) if c["_op"] == "U"
    ]
    marked = [c for c in raw if c["title"] in title_only]
    assert len(marked) == 5
    for change in marked:
        assert change["body"] is None and change["_toast_unchanged"] == ["body"], change["title"]
    body_change = [c for c in raw if c["id"] == 2 and c["title"] == "two"]
    assert body_change and body_change[0]["body"] == big(22)
    assert body_change[0]["_toast_unchanged"] is None
    # resolved: every version carries the body the source had at that moment
    resolved = [c for c in streamed(lake_changes(config, "docs")) if c["_op"] == "U"]
    expected_body = {"t1": big(1), "t1 again": big(1), "t3": big(3), "t2": big(22), None: big(1)}
    for change in resolved:
        if change["title"] in expected_body:
            assert change["body"] == expected_body[change["title"]], change["title"]
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "toast", "docs", ["id"])

        # REPLICA IDENTITY FULL: the old tuple is complete, so the value is filled at capture
        raw_full = streamed(lake_changes(config, "docs_full", resolve_toast=False))
        assert all(c["_toast_unchanged"] is None for c in raw_full)
        for change in raw_full:
            if change["_op"] == "U" and change["title"] in expected_body:
                assert change["body"] == expected_body[change["title"]], change["title"]
        assert_replay_equals_source(config, conn, "toast", "docs_full", ["id"])


def test_unchanged_toast_survives_a_key_change(database: Database, tmp_path: Path) -> None:
    """A key change writes D old key + I new key; the new key's row must not lose the large
    value the update did not touch (the source sends it as 'unchanged')."""
    with oracle(database) as conn:
        conn.execute(TOAST_DDL)
        conn.execute(
            "insert into toast.docs values (1, 'one', %s), (2, 'two', %s)", (big(1), big(2))
        )
    config = project_config(tmp_path, database, "toast", {"docs": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("update toast.docs set id = 101 where id = 1")
        conn.execute("update toast.docs set title = 'two'  where id = 2")
        conn.execute("update toast.docs set id = 102, title = 'moved' where id = 2")
    capture(config, "--once")
    rows = streamed(lake_changes(config, "docs"))
    inserted = {c["id"]: c for c in rows if c["_op"] == "I"}
    assert sorted(inserted) == [101, 102]
    assert inserted[101]["body"] == big(1), "the moved row lost its unchanged TOAST value"
    assert inserted[102]["body"] == big(2), "the moved row lost its unchanged TOAST value"
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "toast", "docs", ["id"])


# --- 4. schema evolution ------------------------------------------------------------------


def test_schema_evolution_round_by_round(database: Database, tmp_path: Path) -> None:
    keys = ["id"]
    with oracle(database) as conn:
        conn.execute(
            "create schema evo;"
            " create table evo.t (id int primary key, a int4, b text, c int4);"
            " insert into evo.t select g, g, 'b' || g, g * 10 from generate_series(1, 5) g"
        )
    config = project_config(tmp_path, database, "evo", {"t": "id"})
    capture(config, "--once")
    assert schema_versions(config, "t") == [1]

    def round_(*statements: str) -> None:
        with oracle(database) as conn:
            for statement in statements:
                conn.execute(statement)
        capture(config, "--once")
        with oracle(database) as conn:
            assert_replay_equals_source(config, conn, "evo", "t", keys)

    round_(  # ADD COLUMN: later rows carry it, earlier ones read it as null
        "alter table evo.t add column d text",
        "insert into evo.t values (6, 6, 'b6', 60, 'd6')",
        "update evo.t set d = 'd1' where id = 1",
    )
    assert schema_versions(config, "t") == [1, 2]
    by_id = {c["id"]: c for c in lake_changes(config, "t") if c["_op"] == "L"}
    assert by_id[2]["d"] is None and by_id[2]["b"] == "b2"

    round_(  # DROP COLUMN
        "alter table evo.t drop column b",
        "insert into evo.t values (7, 7, 70, 'd7')",
        "update evo.t set a = -2 where id = 2",
    )
    assert schema_versions(config, "t") == [1, 2, 3]
    late = [c for c in lake_changes(config, "t") if c["id"] == 7]
    assert late and late[0]["b"] is None

    round_(  # ALTER COLUMN TYPE int4 -> int8
        "alter table evo.t alter column a type int8",
        "insert into evo.t values (8, 9000000000, 80, 'd8')",
        "update evo.t set a = -9000000000 where id = 3",
    )
    assert schema_versions(config, "t") == [1, 2, 3, 4]

    round_(  # ALTER COLUMN TYPE int4 -> text
        "alter table evo.t alter column c type text",
        "insert into evo.t values (9, 9, 'ninety', 'd9')",
        "update evo.t set c = 'forty' where id = 4",
    )
    assert schema_versions(config, "t") == [1, 2, 3, 4, 5]
    # the manifest's versions describe each shape, in order, from their first position
    manifest = manifest_of(config)
    try:
        versions = manifest.lake.schema_versions("t")
    finally:
        manifest.close()
    names = [[col["name"] for col in v.columns] for v in versions]
    assert names == [
        ["id", "a", "b", "c"],
        ["id", "a", "b", "c", "d"],
        ["id", "a", "c", "d"],
        ["id", "a", "c", "d"],
        ["id", "a", "c", "d"],
    ]
    assert [v.first_lsn for v in versions] == sorted(v.first_lsn for v in versions)
    assert [c["key"] for c in versions[-1].columns] == [True, False, False, False]

    # DDL while one --follow stream keeps running: it never stops, and picks up each shape
    proc = start_follow(config)
    try:
        wait_streaming(database, proc)
        with oracle(database) as conn:
            conn.execute("alter table evo.t add column e int4")
            conn.execute("insert into evo.t values (10, 10, '100', 'd10', 1)")
            conn.execute("alter table evo.t alter column e type text")
            conn.execute("insert into evo.t values (11, 11, '110', 'd11', 'eleven')")
            conn.execute("alter table evo.t drop column d")
            conn.execute("insert into evo.t values (12, 12, '120', 'twelve')")
        poll(lambda: any(c["id"] == 12 for c in lake_changes(config, "t")), "row 12", proc=proc)
    finally:
        code, _, err = stop(proc)
    assert code == 0, err
    assert schema_versions(config, "t") == [1, 2, 3, 4, 5, 6, 7, 8]
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "evo", "t", keys)

    changes = lake_changes(config, "t")
    # a re-typed column with a promotion is promoted (int4 -> int8 stays a number) ...
    assert {type(c["a"]) for c in changes if c["a"] is not None} == {int}
    # ... one without is read as text, every version of it
    assert {type(c["c"]) for c in changes if c["c"] is not None} == {str}
    assert [c["c"] for c in changes if c["id"] == 1 and c["_op"] == "L"] == ["10"]


def test_table_added_to_config_between_captures(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema grow;"
            " create table grow.first (id int primary key, v text);"
            " create table grow.second (id int primary key, v text);"
            " insert into grow.first values (1, 'a'); insert into grow.second values (1, 'x')"
        )
    config = project_config(tmp_path, database, "grow", {"first": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("insert into grow.second values (2, 'before it was captured')")
    config = project_config(tmp_path, database, "grow", {"first": "id", "second": "id"})
    added = capture(config, "--once")  # adds grow.second to the publication and copies it
    assert added["snapshot_rows"] == {"second": 2}
    with oracle(database) as conn, conn.transaction():
        later = xid_of(conn)
        conn.execute("insert into grow.second values (3, 'y')")
        conn.execute("update grow.second set v = 'x2' where id = 1")
        conn.execute("insert into grow.first values (2, 'b')")
    result = capture(config, "--once")
    assert result["rows_by_table"] == {"second": 2, "first": 1}
    assert list((tmp_path / "lake" / "raw" / "second").rglob("*.parquet"))
    second = streamed(lake_changes(config, "second"))
    assert [(c["_op"], c["id"], c["v"], c["_xid"]) for c in second] == [
        ("I", 3, "y", later),
        ("U", 1, "x2", later),
    ]
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "grow", "first", ["id"])
        # the rows it had before it was added came from its own snapshot, exactly once
        assert_replay_equals_source(config, conn, "grow", "second", ["id"])


def test_table_added_while_it_is_being_written_lands_exactly_once(
    database: Database, tmp_path: Path
) -> None:
    """Writes to the new table race its backfill copy: the stream drops what the copy holds."""
    import threading

    with oracle(database) as conn:
        conn.execute(
            "create schema race; create table race.a (id int primary key, v int);"
            " create table race.b (id serial primary key, v int);"
            " insert into race.b (v) select g from generate_series(1, 5000) g"
        )
    capture(project_config(tmp_path, database, "race", {"a": "id"}), "--once")
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                with conn.transaction():
                    conn.execute("insert into race.b (v) values (%s)", (n,))
                    conn.execute("update race.b set v = v + 1 where id = %s", (n % 5000 + 1,))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        config = project_config(tmp_path, database, "race", {"a": "id", "b": "id"})
        capture(config, "--once")
    finally:
        stop.set()
        writer.join()
    capture(config, "--once")
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "race", "b", ["id"])
    changes = lake_changes(config, "b")
    keys = [(c["_op"], c["id"], c["_lsn"], c["_seq"]) for c in changes]
    assert len(keys) == len(set(keys))


# --- 5. truncate --------------------------------------------------------------------------


def test_a_table_dropped_and_created_again_is_copied_anew(
    database: Database, tmp_path: Path
) -> None:
    """`shop seed --reset` drops the tables and seeds them again: the publication loses them, so
    the new rows were never streamed, and capture once said "streamed 0 changes" and kept the
    old rows. Now the old rows end in a T row and the new table is copied from a snapshot."""
    with oracle(database) as conn:
        conn.execute("create schema re; create table re.t (id int primary key, v text)")
        conn.execute("insert into re.t values (1, 'old'), (2, 'old')")
    config = project_config(tmp_path, database, "re", {"t": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("update re.t set v = 'older' where id = 2")
        conn.execute("drop table re.t")
        conn.execute("create table re.t (id int primary key, v text, w int)")
        conn.execute("insert into re.t values (2, 'new', 20), (3, 'new', 30)")
    again = capture(config, "--once")
    assert again["snapshot_rows"] == {"t": 2}
    with oracle(database) as conn:
        conn.execute("insert into re.t values (4, 'streamed', 40)")
        conn.execute("delete from re.t where id = 3")
    capture(config, "--once")
    changes = lake_changes(config, "t")
    assert [c["_op"] for c in changes].count("T") == 1
    lake = replay(changes, ["id"])
    assert {k[0]: (r["v"], r["w"]) for k, r in lake.items()} == {
        2: ("new", 20),
        4: ("streamed", 40),
    }
    capture(config, "--once")  # and it stays copied once: nothing lost from the publication
    assert lake_changes(config, "t") == changes


def test_a_crash_before_the_copy_of_a_table_back_in_the_publication_still_copies_it(
    database: Database, tmp_path: Path
) -> None:
    """The run that puts a dropped-and-created table back in the publication decides to copy it;
    it once kept that decision in memory only, so a crash before the copy committed left the
    table looking copied, and every later capture said the lake was complete."""
    with oracle(database) as conn:
        conn.execute("create schema rc; create table rc.t (id int primary key, v text)")
        conn.execute("insert into rc.t values (1, 'old')")
        conn.execute("create schema side; create table side.x (n int)")
    config = project_config(tmp_path, database, "rc", {"t": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("drop table rc.t; create table rc.t (id int primary key, v text)")
        conn.execute("insert into rc.t values (1, 'new'), (2, 'new')")
    # an open transaction holds the copy's slot (a snapshot waits for it) after the publication
    # has the table back: there the capture is killed
    with psycopg.connect(database.dsn) as blocker:
        blocker.execute("insert into side.x values (1)")
        proc = start_cli("capture", "--once", "-c", str(config))
        try:
            poll(
                lambda: bool(
                    blocker.execute(
                        "select 1 from pg_replication_slots where slot_name like '%backfill%'"
                        " and database = current_database()"
                    ).fetchone()
                ),
                "the copy's slot",
                proc=proc,
            )
        finally:
            proc.kill()
            proc.communicate()
        blocker.rollback()
    again = capture(config, "--once")
    assert again["snapshot_rows"] == {"t": 2}
    lake = replay(lake_changes(config, "t"), ["id"])
    assert {k[0]: r["v"] for k, r in lake.items()} == {1: "new", 2: "new"}


def test_follow_copies_anew_a_table_dropped_and_created_while_it_streams(
    database: Database, tmp_path: Path
) -> None:
    """A follower once never saw `shop seed --reset` done under it: the new table is in no
    publication, so nothing of it was streamed until capture was restarted by hand."""
    with oracle(database) as conn:
        conn.execute("create schema rf; create table rf.t (id int primary key, v text)")
        conn.execute("insert into rf.t values (1, 'old')")
    config = project_config(tmp_path, database, "rf", {"t": "id"})
    capture(config, "--once")
    proc = start_follow(config)
    try:
        wait_streaming(database, proc)
        with oracle(database) as conn:
            conn.execute("drop table rf.t; create table rf.t (id int primary key, v text)")
            conn.execute("insert into rf.t values (1, 'new'), (2, 'new')")

        def caught_up() -> bool:
            lake = replay(lake_changes(config, "t"), ["id"])
            return {k[0]: r["v"] for k, r in lake.items()} == {1: "new", 2: "new"}

        poll(caught_up, "the table copied anew", deadline=120, proc=proc)
        with oracle(database) as conn:
            conn.execute("insert into rf.t values (3, 'streamed')")
        poll(lambda: len(replay(lake_changes(config, "t"), ["id"])) == 3, "row 3", proc=proc)
    finally:
        code, _, err = stop(proc)
    assert code == 0 and "Traceback" not in err, err


def test_a_table_left_out_of_the_config_and_back_is_copied_anew(
    database: Database, tmp_path: Path
) -> None:
    """Its changes while out of tables: were never captured (the stream skips what it does not
    capture): back in, it is copied again after a T row, not left stale."""
    with oracle(database) as conn:
        conn.execute("create schema back; create table back.a (id int primary key, v text)")
        conn.execute("create table back.b (id int primary key, v text)")
        conn.execute("insert into back.a values (1, 'a'); insert into back.b values (1, 'b')")
    both = project_config(tmp_path, database, "back", {"a": "id", "b": "id"}).read_text()
    config = tmp_path / "riverbed.yaml"
    capture(config, "--once")
    config.write_text(project_config(tmp_path, database, "back", {"a": "id"}).read_text())
    with oracle(database) as conn:
        conn.execute("insert into back.b values (2, 'while out')")
        conn.execute("update back.b set v = 'changed while out' where id = 1")
        conn.execute("insert into back.a values (2, 'a')")
    capture(config, "--once")
    config.write_text(both)
    back = capture(config, "--once")
    assert back["snapshot_rows"] == {"b": 2}
    with oracle(database) as conn:
        conn.execute("insert into back.b values (3, 'streamed')")
    capture(config, "--once")
    for table in ("a", "b"):
        changes = lake_changes(config, table)
        lake = {k[0]: r["v"] for k, r in replay(changes, ["id"]).items()}
        with oracle(database) as conn:
            assert lake == dict(conn.execute(f"select id, v from back.{table}").fetchall())
    assert [c["_op"] for c in lake_changes(config, "b")].count("T") == 1


def test_truncate_is_recorded_and_replayed(database: Database, tmp_path: Path) -> None:
    keys = ["id"]
    with oracle(database) as conn:
        conn.execute(
            "create schema tr;"
            " create table tr.a (id int primary key, v text);"
            " create table tr.b (id int primary key, a_id int references tr.a, v text);"
            " insert into tr.a select g, 'a' || g from generate_series(1, 5) g;"
            " insert into tr.b select g, g, 'b' || g from generate_series(1, 3) g"
        )
    config = project_config(tmp_path, database, "tr", {"a": "id", "b": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("insert into tr.a values (6, 'a6')")
        with conn.transaction():
            both = xid_of(conn)
            conn.execute("truncate tr.a, tr.b")
        conn.execute("insert into tr.a values (1, 'again'), (2, 'again')")
        with conn.transaction():  # truncate then insert in one transaction
            again = xid_of(conn)
            conn.execute("truncate tr.a cascade")
            conn.execute("insert into tr.a values (7, 'after')")
        conn.execute("insert into tr.b values (1, 7, 'b after')")
    capture(config, "--once")
    a = streamed(lake_changes(config, "a"))
    b = streamed(lake_changes(config, "b"))
    assert [(c["_op"], c["_xid"]) for c in a if c["_op"] == "T"] == [("T", both), ("T", again)]
    assert [(c["_op"], c["_xid"]) for c in b if c["_op"] == "T"] == [("T", both), ("T", again)]
    assert [c["_op"] for c in a if c["_xid"] == again] == ["T", "I"]
    assert all(c["id"] is None for c in a + b if c["_op"] == "T")
    with oracle(database) as conn:
        assert_replay_equals_source(config, conn, "tr", "a", keys)
        assert_replay_equals_source(config, conn, "tr", "b", keys)
        assert len(source_rows(conn, "tr", "a", keys)) == 1


# --- 6. a transaction larger than the flush size --------------------------------------------


def test_large_transaction_spills_and_becomes_visible_at_once(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema big; create table big.t (id int primary key, v text);"
            " insert into big.t values (0, 'seed')"
        )
    config = project_config(tmp_path, database, "big", {"t": "id"}, max_rows=1000)
    capture(config, "--once")
    with oracle(database) as conn, conn.transaction():
        xid = xid_of(conn)
        conn.execute("insert into big.t select g, md5(g::text) from generate_series(1, 25000) g")
    result = capture(config, "--once")
    assert result["rows"] == 25_000 and result["transactions"] == 1
    rows = streamed(lake_changes(config, "t"))
    assert len(rows) == 25_000
    assert sorted(c["id"] for c in rows) == list(range(1, 25_001))  # each exactly once
    assert {c["_xid"] for c in rows} == {xid} and len({c["_lsn"] for c in rows}) == 1
    assert [c["_seq"] for c in rows] == list(range(25_000))

    project = load_project(config)
    with sqlite3.connect(project.path(project.config.state.path)) as db:
        files = db.execute(
            "select path, rows, created_at, min_lsn, max_lsn from lake_files"
            " where table_name = 't' and full_load = 0"
        ).fetchall()
    assert len(files) >= 5, "a 25,000-row transaction with max_rows 1000 should span files"
    assert sum(f[1] for f in files) == 25_000
    assert len({f[2] for f in files}) == 1, "the files became visible in different commits"
    assert len({(f[3], f[4]) for f in files}) == 1
    on_disk = {
        str(p.relative_to(tmp_path / "lake"))
        for p in (tmp_path / "lake" / "raw" / "t").rglob("*.parquet")
        if not p.name.startswith("snapshot_")
    }
    assert on_disk == {f[0] for f in files}


# --- 7. an S3 lake ------------------------------------------------------------------------

S3_BUCKET = "riverbed-cases"
S3_ENV = {"RB_S3_KEY": "testing", "RB_S3_SECRET": "s3cr3t-cases"}


@pytest.fixture(scope="module")
def s3_endpoint(s3_server: str) -> str:
    s3_bucket(s3_server, S3_BUCKET, S3_ENV["RB_S3_KEY"], S3_ENV["RB_S3_SECRET"])
    return s3_server


def s3_admin(port: int) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=S3_ENV["RB_S3_KEY"],
        secret_key=S3_ENV["RB_S3_SECRET"],
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )


def test_capture_into_an_s3_lake(
    database: Database, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riverbed.shop.history import HistorySpec
    from riverbed.shop.schema import COLUMNS, TABLES
    from riverbed.shop.seed import seed
    from riverbed.shop.workload import Workload, WorkloadSpec

    with database.connect() as conn:
        seed(
            conn, HistorySpec(customers=200, sellers=20, products=80, orders=1000, months=2, seed=3)
        )
    lake = (
        f"lake:\n  path: s3://{S3_BUCKET}/cases\n  endpoint_url: {s3_endpoint}\n"
        "  region: us-east-1\n  access_key_id: {env: RB_S3_KEY}\n"
        "  secret_access_key: {env: RB_S3_SECRET}\n  max_rows: 5000\n  max_seconds: 1\n"
    )
    config = capture_config(tmp_path, database)
    text = config.read_text()
    config.write_text(text[: text.index("lake:\n")] + lake + text[text.index("state:\n") :])
    first = capture(config, "--once", env=S3_ENV)
    assert first["snapshot_rows"]["orders"] == 1000
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        Workload(conn, WorkloadSpec(rate=0, duration=2, seed=4, large_every=1)).run()
    second = capture(config, "--once", env=S3_ENV)
    assert second["rows"] > 0

    assert not (tmp_path / "lake").exists()  # nothing went to a local folder
    port = int(s3_endpoint.rsplit(":", 1)[1])
    objects = {
        info.path.removeprefix(f"{S3_BUCKET}/cases/")
        for info in s3_admin(port).get_file_info(
            pafs.FileSelector(f"{S3_BUCKET}/cases/raw", recursive=True)
        )
        if info.type == pafs.FileType.File
    }
    manifest = manifest_of(config)
    try:
        visible = {f.path for f in manifest.lake.files("raw")}
    finally:
        manifest.close()
    assert visible and visible == objects
    assert {p.split("/")[1] for p in objects} == set(TABLES)

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    with database.connect() as conn:
        for table in TABLES:
            assert_replay_equals_source(config, conn, "shop", table, [COLUMNS[table][1]])


# --- 8. idle captured tables never pin the WAL ----------------------------------------------


def lsn(conn: psycopg.Connection, expression: str) -> int:
    row = conn.execute(f"select ({expression}) - '0/0'::pg_lsn").fetchone()
    assert row is not None and row[0] is not None, expression
    return int(row[0])


def test_idle_captured_tables_do_not_pin_wal(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema wal;"
            " create table wal.quiet (id int primary key, v text);"
            " create table wal.busy (id bigserial primary key, pad text);"
            " insert into wal.quiet values (1, 'idle')"
        )
    config = project_config(tmp_path, database, "wal", {"quiet": "id"})
    capture(config, "--once")
    proc = start_follow(config)
    try:
        wait_streaming(database, proc)
        slot = "select {} from pg_replication_slots where database = current_database()"
        with oracle(database) as conn:
            start = lsn(conn, "pg_current_wal_lsn()")
            for _ in range(5):  # ~50 MB of WAL in tables the slot does not publish
                conn.execute(
                    "insert into wal.busy (pad) select repeat(md5(g::text), 30)"
                    " from generate_series(1, 10000) g"
                )
            end = lsn(conn, "pg_current_wal_lsn()")
            assert end - start > 40 * 2**20
            poll(
                lambda: lsn(conn, slot.format("confirmed_flush_lsn")) >= end,
                "the slot to confirm past the busy table's WAL",
                proc=proc,
            )
            # the server frees WAL up to the slot's restart point: retained WAL stays bounded.
            # The restart point moves at running-xacts records, which the server logs every 15 s
            # anyway; log them now so that the wait is short (capture must still confirm them).
            retained = slot.format("pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)")

            def bounded() -> bool:
                conn.execute("select pg_log_standby_snapshot()")
                return bool(conn.execute(retained).fetchone()[0] < 16 * 2**20)  # type: ignore[index]

            poll(
                bounded,
                "the slot's retained WAL to shrink below 16 MB",
                proc=proc,
            )
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert json.loads(out)["rows"] == 0
    assert not (tmp_path / "lake" / "raw" / "busy").exists()
    assert [c["_op"] for c in lake_changes(config, "quiet")] == ["L"]


# --- 9. status ----------------------------------------------------------------------------


def test_status_reports_slot_position_lag_and_lake_rows(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema st;"
            " create table st.alpha (id int primary key, v text);"
            " create table st.beta (id int primary key, v text);"
            " insert into st.alpha select g, 'a' from generate_series(1, 30) g;"
            " insert into st.beta values (1, 'b')"
        )
    config = project_config(tmp_path, database, "st", {"alpha": "id", "beta": "id"})
    before = run_cli("status", "--json", "-c", str(config))
    assert before.code == 0, before.text
    assert json.loads(before.out)["capture"]["slot"] is None
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("update st.alpha set v = 'changed' where id <= 10")
        conn.execute("delete from st.alpha where id > 25")
        conn.execute("insert into st.beta values (2, 'c')")
    done = capture(config, "--once")

    result = run_cli("status", "--json", "-c", str(config))
    assert result.code == 0, result.text
    report = json.loads(result.out)
    cap = report["capture"]
    assert cap["slot"] == "riverbed"
    assert cap["position"] == done["position"]
    assert isinstance(cap["lag_bytes"], int) and cap["lag_bytes"] >= 0
    assert report["source"]["state"] == "reachable"
    rows = {t: len(lake_changes(config, t)) for t in ("alpha", "beta")}
    assert rows == {"alpha": 30 + 10 + 5, "beta": 2}
    assert {t: info["rows"] for t, info in report["lake"].items()} == rows
    assert cap["rows"] == sum(rows.values())

    human = run_cli("status", "-c", str(config))
    assert human.code == 0, human.text
    assert "riverbed" in human.out and cap["position"] in human.out
    for table in ("alpha", "beta"):
        assert table in human.out


def slot_confirmed(database: Database) -> str:
    with oracle(database) as conn:
        row = conn.execute(
            "select confirmed_flush_lsn::text from pg_replication_slots"
            " where database = current_database()"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_clean_exit_leaves_the_slot_confirming_what_the_lake_holds(
    database: Database, tmp_path: Path
) -> None:
    """The stream confirms a position to the slot once the lake has it; a clean stop must not
    leave the last confirmation unsent (the server would keep that WAL and resend it)."""
    with oracle(database) as conn:
        conn.execute(
            "create schema ack; create table ack.t (id int primary key, v text);"
            " insert into ack.t values (1, 'a')"
        )
    config = project_config(tmp_path, database, "ack", {"t": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("insert into ack.t values (2, 'b')")
    once = capture(config, "--once")
    assert once["rows"] == 1
    assert slot_confirmed(database) == once["position"]
    idle = capture(config, "--once")  # nothing new: nothing is sent again to be skipped
    assert idle["rows"] == 0 and idle["skipped_transactions"] == 0

    proc = start_follow(config)
    try:
        wait_streaming(database, proc)
        with oracle(database) as conn:
            conn.execute("insert into ack.t values (3, 'c')")
        poll(lambda: len(lake_changes(config, "t")) == 3, "row 3 in the lake", proc=proc)
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert slot_confirmed(database) == json.loads(out)["position"]


# --- 10. bad input ------------------------------------------------------------------------


def test_a_table_missing_from_the_source_is_one_clear_line(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute("create schema bad; create table bad.real (id int primary key)")
    config = project_config(tmp_path, database, "bad", {"real": "id", "ghost": "id"})
    result = run_cli("capture", "--once", "-c", str(config))
    assert result.code != 0
    assert "Traceback" not in result.text
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "tables.ghost" in lines[0] and "bad.ghost" in lines[0]
    assert "riverbed.yaml" in lines[0]  # the fix: create it or remove it from the config
    assert not list((tmp_path / "lake").rglob("*.parquet"))
    with oracle(database) as conn:
        assert not conn.execute(
            "select 1 from pg_replication_slots where database = current_database()"
        ).fetchone()
        assert not conn.execute("select 1 from pg_publication").fetchone()


@pytest.mark.parametrize("flags", [(), ("--once", "--follow")], ids=["neither", "both"])
def test_capture_needs_exactly_one_of_once_and_follow(
    database: Database, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    config = capture_config(tmp_path, database)
    result = run_cli("capture", *flags, "-c", str(config))
    assert result.code != 0 and "Traceback" not in result.text
    assert "--once" in result.err and "--follow" in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "lake").exists()


def test_a_second_capture_on_the_same_project_is_refused(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema two; create table two.t (id int primary key);"
            " insert into two.t values (1)"
        )
    config = project_config(tmp_path, database, "two", {"t": "id"})
    first = start_follow(config)
    try:
        wait_streaming(database, first)
        for mode in ("--follow", "--once"):
            second = run_cli("capture", mode, "-c", str(config), timeout=60)
            assert second.code != 0 and "Traceback" not in second.text
            assert f"pid {first.pid}" in second.err, second.err
            assert "another" in second.err and "riverbed capture" in second.err
        assert first.poll() is None, "the running capture must not be disturbed"
    finally:
        code, _, err = stop(first)
    assert code == 0, err
    again = capture(config, "--once")  # and once it is gone, capture works again
    assert again["resumed_from"] is not None


def test_status_does_not_show_a_stale_lag_when_the_source_is_unreachable(
    database: Database, tmp_path: Path
) -> None:
    # the last capture recorded a lag of 0; with the source down, the lag cannot be measured:
    # status says so rather than showing that 0 as if the lake were caught up
    with oracle(database) as conn:
        conn.execute("create schema gone; create table gone.t (id int primary key)")
    config = project_config(tmp_path, database, "gone", {"t": "id"})
    capture(config, "--once")
    with oracle(database) as conn:
        conn.execute("insert into gone.t select generate_series(1, 10)")  # pending, not captured
    text = config.read_text()
    unreachable = re.sub(r"port=\d+", f"port={free_port()}", text)
    assert unreachable != text
    config.write_text(unreachable)

    result = run_cli("status", "--json", "-c", str(config))
    assert result.code == 0, result.text
    report = json.loads(result.out)
    assert report["source"]["state"] == "unreachable"
    assert report["capture"]["lag_bytes"] is None and report["capture"]["lag_seconds"] is None
    human = run_cli("status", "-c", str(config), env={"COLUMNS": "80"})
    assert "lag unknown (source unreachable)" in " ".join(human.out.split())
    assert "lag 0 B" not in human.out
