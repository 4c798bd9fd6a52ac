"""The audit trail: one row of ``audit_log`` per gateway decision or governance change, in
the order they were appended, hash-chained (riverbed.state.audit_chain), and ``audit_head``,
one row holding the last id and hash appended.

Appending reads the head and writes the record and the new head in one write transaction
(BEGIN IMMEDIATE, under the connection's lock), so writers in threads and in other processes
take turns and keep one chain. Nothing here updates or deletes a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from riverbed.state.audit_chain import GENESIS, digest, normalised, walk
from riverbed.state.records import AuditCheck, AuditEntry, AuditRecord
from riverbed.state.sql.database import Database

SCHEMA = """
create table if not exists audit_log (
  id         integer primary key,  -- the record's place in the chain: 1, 2, ...
  ts         real not null,
  principal  text not null,
  path       text not null,         -- cli | api | web | export | govern
  action     text not null,         -- query | apply | rotate | forget | ...
  sql        text,
  detail     text not null,         -- JSON object
  tables     text not null,         -- JSON list
  allowed    integer not null,
  reason     text,
  rows       integer,
  seconds    real,
  prev_hash  text not null,
  hash       text not null
);
create index if not exists audit_log_by_time on audit_log (ts);
create index if not exists audit_log_by_principal on audit_log (principal, ts);
create table if not exists audit_head (
  one      integer primary key check (one = 1),
  last_id  integer not null,
  hash     text not null
);
"""

_COLUMNS = (
    "id, ts, principal, path, action, sql, detail, tables, allowed, reason, rows, seconds,"
    " prev_hash, hash"
)


class SQLAuditLog:
    def __init__(self, db: Database):
        self._db = db

    def append(self, entry: AuditEntry) -> AuditRecord:
        """``entry`` as the chain's next record."""
        entry = normalised(entry)
        with self._db.write() as db:
            head = db.execute("select last_id, hash from audit_head").fetchone()
            last_id, prev_hash = head if head is not None else (0, GENESIS)
            # past any id already taken, even one that was not appended here (verify says so)
            (taken,) = db.execute("select coalesce(max(id), 0) from audit_log").fetchone()
            record = AuditRecord(
                **asdict(entry),
                id=max(last_id, taken) + 1,
                prev_hash=prev_hash,
                hash=digest(entry, prev_hash),
            )
            db.execute(
                f"insert into audit_log ({_COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?)",
                _row(record),
            )
            db.execute(
                "insert into audit_head (one, last_id, hash) values (1, ?, ?) on conflict (one)"
                " do update set last_id = excluded.last_id, hash = excluded.hash",
                (record.id, record.hash),
            )
        return record

    def records(
        self,
        *,
        principal: str | None = None,
        denied: bool = False,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """The records of ``principal`` (everyone's without it), only the denied ones when
        ``denied``, appended at or after ``since``: the newest ``limit`` of them (all without
        it), newest first."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if principal is not None:
            where.append("principal = ?")
            params.append(principal)
        if denied:
            where.append("allowed = 0")
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        query = f"select {_COLUMNS} from audit_log where {' and '.join(where)} order by id desc"
        if limit is not None:
            query += " limit ?"
            params.append(limit)
        rows = self._db.rows(query, params)
        return [_record(r) for r in rows]

    def verify(self) -> AuditCheck:
        """Walk the whole chain, as of one moment (appends meanwhile wait for the next
        check): intact, or the first record edited, deleted or inserted."""
        with self._db.snapshot() as db:
            head = db.execute("select last_id, hash from audit_head").fetchone()
            rows = db.execute(f"select {_COLUMNS} from audit_log order by id")
            return walk(_records(rows), None if head is None else (head[0], head[1]))


def _records(rows: Any) -> Iterator[AuditRecord]:
    for row in rows:
        yield _record(row)


def _row(r: AuditRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.ts,
        r.principal,
        r.path,
        r.action,
        r.sql,
        json.dumps(r.detail, sort_keys=True),
        json.dumps(list(r.tables)),
        int(r.allowed),
        r.reason,
        r.rows,
        r.seconds,
        r.prev_hash,
        r.hash,
    )


def _record(r: Any) -> AuditRecord:
    """The record a row holds; one whose JSON was edited into something unreadable keeps the
    text as it is, which then matches no hash (verify names it)."""
    return AuditRecord(
        id=r[0],
        ts=r[1],
        principal=r[2],
        path=r[3],
        action=r[4],
        sql=r[5],
        detail=_json(r[6], dict, {"unreadable": r[6]}),
        tables=tuple(_json(r[7], list, [str(r[7])])),
        allowed=bool(r[8]),
        reason=r[9],
        rows=r[10],
        seconds=r[11],
        prev_hash=r[12],
        hash=r[13],
    )


def _json(text: Any, kind: type, otherwise: Any) -> Any:
    """``text`` parsed as JSON when it holds a ``kind``, else ``otherwise``."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return otherwise
    return value if isinstance(value, kind) else otherwise
