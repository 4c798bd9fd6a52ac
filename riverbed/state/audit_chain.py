"""The audit trail's hash chain: how a record's hash is made, and how walking the chain finds
the first record that was edited, deleted or inserted. Shared by every implementation of the
state store's audit log (riverbed.state.store.AuditLog), so they hash alike.

A record's ``hash`` is the SHA-256 of a canonical JSON (sorted keys, no spaces, ASCII) of its
fields and ``prev_hash``, the hash of the record before it (64 zeros for the first). Editing
a field breaks its own hash; recomputing that hash breaks the next record's ``prev_hash``.

The ``id`` (1, 2, ...) is not hashed: it names a record's place, so that a deleted record
leaves a gap to name it by, while the chain itself holds the order. Next to the records the
store keeps a head, the last id and hash appended, so that deleting the newest records (which
leaves no record behind to disagree) is found too.

What this does not stop: someone who can write the state store can rewrite the whole chain
and its head, consistently. Against that, keep the head hash somewhere else (`riverbed audit
--verify --json` prints it) and compare it later; the chain proves everything before it.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

from riverbed.state.records import AuditCheck, AuditEntry, AuditProblem, AuditRecord

GENESIS = "0" * 64  # the prev_hash of the first record

# how many records past a break are read to see whether the break is a run of inserted
# records, and how many verified hashes are remembered to see whether one was skipped
LOOK_AHEAD = 1000
REMEMBERED = 1000

Finding = tuple[AuditProblem, int, str]  # what is wrong, with which record, and why


def normalised(entry: AuditEntry) -> AuditEntry:
    """``entry`` with every field as the store gives it back (floats as floats, the detail as
    JSON reads it), so the hash made when it is appended is the one verify makes again."""
    detail = json.loads(json.dumps(entry.detail, default=str, sort_keys=True))
    return replace(
        entry,
        ts=float(entry.ts),
        tables=tuple(str(t) for t in entry.tables),
        allowed=bool(entry.allowed),
        rows=None if entry.rows is None else int(entry.rows),
        seconds=None if entry.seconds is None else float(entry.seconds),
        detail=detail,
    )


def digest(entry: AuditEntry, prev_hash: str) -> str:
    """The hash of ``entry`` chained after the record whose hash is ``prev_hash``."""
    content: dict[str, Any] = {
        "ts": entry.ts,
        "principal": entry.principal,
        "path": entry.path,
        "action": entry.action,
        "sql": entry.sql,
        "detail": entry.detail,
        "tables": list(entry.tables),
        "allowed": entry.allowed,
        "reason": entry.reason,
        "rows": entry.rows,
        "seconds": entry.seconds,
        "prev_hash": prev_hash,
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def walk(records: Iterable[AuditRecord], head: tuple[int, str] | None) -> AuditCheck:
    """Check ``records`` (in id order) against each other and against the store's ``head``
    (last id, hash; None when the store has none): intact, or the first record that is not
    what was appended."""
    stream = iter(records)
    prev_id, prev_hash, count = 0, GENESIS, 0
    verified: deque[tuple[int, str]] = deque(maxlen=REMEMBERED)
    for record in stream:
        if record.prev_hash == prev_hash and digest(record, prev_hash) == record.hash:
            verified.append((record.id, record.hash))
            prev_id, prev_hash, count = record.id, record.hash, count + 1
            continue
        upcoming = list(islice(stream, LOOK_AHEAD))
        problem, at, why = _diagnose(record, prev_id, prev_hash, verified, upcoming)
        return AuditCheck(records=count, head=prev_hash, problem=problem, record=at, why=why)
    return _against_head(count, prev_id, prev_hash, head)


def _diagnose(
    record: AuditRecord,
    prev_id: int,
    prev_hash: str,
    verified: Sequence[tuple[int, str]],
    upcoming: Sequence[AuditRecord],
) -> Finding:
    """Why ``record``, the first that does not verify after record ``prev_id``, does not."""
    for later in upcoming:  # the chain picks up again after a run of records slipped in
        if later.prev_hash == prev_hash and digest(later, prev_hash) == later.hash:
            return (
                "inserted",
                record.id,
                f"record {later.id} is chained to record {prev_id or 'none'}: "
                f"the records from {record.id} before it were not appended there",
            )
    earlier = [i for i, (_, h) in enumerate(verified) if h == record.prev_hash]
    if earlier and earlier[0] + 1 < len(verified):  # records slipped in, then the chain went on
        first = verified[earlier[0] + 1][0]
        return (
            "inserted",
            first,
            f"record {record.id} is chained to record {verified[earlier[0]][0]}: "
            f"the records from {first} before it were not appended there",
        )
    if record.id > prev_id + 1:
        return (
            "deleted",
            prev_id + 1,
            f"the chain goes from record {prev_id or 'none'} to record {record.id}",
        )
    if digest(record, record.prev_hash) == record.hash and prev_id:
        return (
            "edited",
            prev_id,
            f"its hash is not the one record {record.id} was chained to",
        )
    return "edited", record.id, "its fields do not match its hash"


def _against_head(
    count: int, last_id: int, last_hash: str, head: tuple[int, str] | None
) -> AuditCheck:
    """The verified chain of ``count`` records, ending at ``last_id``, against the head."""
    head_id, head_hash = head if head is not None else (0, GENESIS)
    found: Finding | None = None
    if head is None and count:
        found = ("deleted", last_id + 1, "the chain's head (its last id and hash) is gone")
    elif head_id > last_id:
        found = (
            "deleted",
            last_id + 1,
            f"the chain ends at record {last_id or 'none'} but {head_id} were appended",
        )
    elif head_id < last_id:
        found = (
            "inserted",
            head_id + 1,
            f"the chain goes on to record {last_id} but ended at {head_id or 'none'}",
        )
    elif head_hash != last_hash:
        found = ("edited", last_id, "its hash is not the last one appended")
    if found is None:
        return AuditCheck(records=count, head=last_hash)
    problem, at, why = found
    return AuditCheck(records=count, head=last_hash, problem=problem, record=at, why=why)
