"""The pgoutput decoder on real server output (pg_logical_slot_get_binary_changes)."""

from __future__ import annotations

import psycopg
import pytest

from conftest import Database
from riverbed.capture import pgoutput
from riverbed.capture.pgoutput import UNCHANGED
from riverbed.lake.positions import format_lsn, parse_lsn


@pytest.fixture
def slot_db(database: Database) -> Database:
    with database.connect(autocommit=True) as conn:
        conn.execute("create type mood as enum ('sad', 'ok', 'happy')")
        conn.execute(
            "create table t (id int primary key, name text, amount numeric(12,2), feeling mood,"
            " tags text[], body text, at timestamptz)"
        )
        conn.execute(
            "alter table t alter column body set storage external"
        )  # TOAST without compression
        conn.execute("create publication p for table t")
        conn.execute("select pg_create_logical_replication_slot('s', 'pgoutput')")
    return database


def changes(conn: psycopg.Connection) -> list[bytes]:
    rows = conn.execute(
        "select data from pg_logical_slot_get_binary_changes('s', null, null,"
        " 'proto_version', '1', 'publication_names', 'p', 'messages', 'true')"
    ).fetchall()
    return [bytes(r[0]) for r in rows]


def test_every_message_kind_decodes(slot_db: Database) -> None:
    with slot_db.connect(autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                "insert into t values (1, 'a', 12.50, 'happy', '{x,\"y z\",NULL}', repeat('b', 5000),"
                " '2026-01-02 03:04:05.678+00'), (2, null, -0.01, 'sad', '{}', 'short', null)"
            )
        conn.execute("update t set amount = 13 where id = 1")  # body TOASTed and untouched
        conn.execute("update t set id = 10 where id = 2")  # key change
        conn.execute("delete from t where id = 10")
        conn.execute("select pg_logical_emit_message(false, 'riverbed', 'beat')")
        conn.execute("truncate t")
        messages = changes(conn)
    kinds = [chr(m[0]) for m in messages]
    assert kinds[:6] == ["B", "Y", "R", "I", "I", "C"], kinds
    assert "M" in kinds and "T" in kinds and "D" in kinds and kinds.count("U") == 2

    begin = pgoutput.parse_begin(messages[0])
    commit = pgoutput.parse_commit(messages[5])
    assert commit.commit_lsn == begin.final_lsn and commit.end_lsn > commit.commit_lsn
    assert begin.commit_ts_us == commit.commit_ts_us

    enum = pgoutput.parse_type(messages[1])
    assert enum.name == "mood" and enum.namespace == "public"
    relation = pgoutput.parse_relation(messages[2])
    assert relation.qualified == "public.t" and relation.replica_identity == "d"
    assert [c.name for c in relation.columns] == [
        "id",
        "name",
        "amount",
        "feeling",
        "tags",
        "body",
        "at",
    ]
    assert [c.is_key for c in relation.columns] == [True] + [False] * 6
    amount = relation.columns[2]
    assert amount.type_oid == 1700 and (
        (amount.type_modifier - 4) >> 16,
        (amount.type_modifier - 4) & 0xFFFF,
    ) == (12, 2)
    assert relation.columns[3].type_oid == enum.oid

    relid, first = pgoutput.parse_insert(messages[3])
    assert relid == relation.relid
    assert first[:5] == [b"1", b"a", b"12.50", b"happy", b'{x,"y z",NULL}']
    assert first[5] == b"b" * 5000 and first[6] == b"2026-01-02 03:04:05.678+00"
    _, second = pgoutput.parse_insert(messages[4])
    assert second[1] is None and second[6] is None and second[4] == b"{}"

    updates = [m for m in messages if m[:1] == b"U"]
    _, old_kind, old, new = pgoutput.parse_update(updates[0])
    assert old_kind is None and old is None
    assert new[2] == b"13.00" and new[5] is UNCHANGED  # never a NULL: the value was not sent
    _, old_kind, old, new = pgoutput.parse_update(updates[1])
    assert old_kind == "K" and old[0] == b"2" and new[0] == b"10"

    delete = next(m for m in messages if m[:1] == b"D")
    _, kind, key = pgoutput.parse_delete(delete)
    assert kind == "K" and key[0] == b"10" and key[1:] == [None] * 6

    message = pgoutput.parse_message(next(m for m in messages if m[:1] == b"M"))
    assert message.prefix == "riverbed" and message.content == b"beat" and not message.transactional

    truncate = pgoutput.parse_truncate(next(m for m in messages if m[:1] == b"T"))
    assert truncate.relids == (relation.relid,)


def test_replica_identity_full_sends_the_old_row(slot_db: Database) -> None:
    with slot_db.connect(autocommit=True) as conn:
        conn.execute("alter table t replica identity full")
        conn.execute("insert into t (id, name, amount) values (5, 'x', 1)")
        conn.execute("update t set name = 'y' where id = 5")
        conn.execute("delete from t where id = 5")
        messages = changes(conn)
    update = next(m for m in messages if m[:1] == b"U")
    _, old_kind, old, new = pgoutput.parse_update(update)
    assert old_kind == "O" and old[1] == b"x" and new[1] == b"y"
    _, kind, old_row = pgoutput.parse_delete(next(m for m in messages if m[:1] == b"D"))
    assert kind == "O" and old_row[:3] == [b"5", b"y", b"1.00"]


def test_lsn_text_round_trip() -> None:
    for text in ("0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        assert format_lsn(parse_lsn(text)) == text


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(pgoutput.ProtocolError):
        pgoutput.parse_tuple(b"\x00\x01z", 0)
