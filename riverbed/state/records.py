"""The records the state store keeps, as the stages pass them: frozen dataclasses, built with
keyword arguments, turned into JSON only at the command line's edge."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from riverbed.lake.layout import batch_of, parse_raw_path


@dataclass(frozen=True, kw_only=True)
class LakeFile:
    """One visible file of the lake and what it holds."""

    path: str
    stage: str  # raw | staged | quarantine | bad
    table: str
    rows: int
    bytes: int
    min_lsn: int
    max_lsn: int
    schema_version: int
    full_load: bool = False
    min_commit_ts: int | None = None  # raw files: first and last commit time, in microseconds
    max_commit_ts: int | None = None

    @property
    def batch_id(self) -> str | None:
        """The transform batch a staged or quarantined file belongs to (its ``batch=<id>``
        folder); None for a raw file."""
        return batch_of(self.path)

    def committed_from(self, hour: datetime) -> bool:
        """Whether this raw file holds changes committed in ``hour`` (the start of an hour,
        UTC) or later: by its recorded commit times, or for a file recorded before they were,
        by the partition hour its path names."""
        if self.max_commit_ts is not None:
            return self.max_commit_ts >= int(hour.timestamp()) * 1_000_000
        return parse_raw_path(self.path).hour >= hour


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a captured table's columns, from the first LSN that has it."""

    table: str
    version: int
    columns: list[dict[str, Any]]  # [{name, type_oid, type_modifier, type_name, key}]
    first_lsn: int


@dataclass(frozen=True)
class SnapshotDone:
    """A table's snapshot copy, finished: its rows are in the lake as of ``consistent_lsn``."""

    table: str
    consistent_lsn: int
    rows: int


@dataclass(frozen=True)
class TableSummary:
    """What the lake holds of one table at one stage."""

    files: int
    rows: int
    schema_version: int
    landed_at: float  # when its newest file became visible
    snapshot_rows: int


@dataclass(frozen=True, kw_only=True)
class LoadBatch:
    """A staged batch of ``table``, loaded into the warehouse's ``target`` table."""

    batch_id: str
    table: str
    target: str
    rows: int  # what the load applied with it: every row its staging table held
    seconds: float
    loaded_at: float


@dataclass(frozen=True, kw_only=True)
class Staging:
    """What a table's staging table in the warehouse holds: its pending batches, staged and
    not applied yet (a run that failed after staging resumes from them)."""

    table: str
    batch_ids: tuple[str, ...]
    rows: int
    staged_at: float
    # a fact's load order and window as its staging load saw them, in the load stage's own
    # text (riverbed.load.facts.PlanOfParts.to_json); None when none was recorded for these
    # batches (a dimension, or staging loaded by a version that did not record it)
    plan: str | None = None


@dataclass(frozen=True)
class Sample:
    """One metric sample: a counter's increment or a gauge's reading (is_counter)."""

    name: str
    value: float
    ts: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BatchRecord:
    """One transform batch: what it read and wrote, and how it ended."""

    batch_id: str
    table: str
    engine: str
    status: str  # staged | failed | superseded (withdrawn)
    input_files: int
    rows_in: int
    rows_out: int
    rows_quarantined: int
    min_lsn: int
    max_lsn: int
    seconds: float
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class QualityResult:
    """One quality rule's result on one batch."""

    rule: str  # the rule's label
    rule_type: str
    action: str
    checked: int
    failed: int
    status: str  # pass | warn | fail | quarantined
    observed: str | None = None
    samples: list[Any] = field(default_factory=list)  # key values of failing rows

    @property
    def ratio(self) -> float:
        return self.failed / self.checked if self.checked else 0.0

    def as_dict(self) -> dict[str, Any]:
        """As `riverbed run --json` shows it (the ratio rounded to 6 places)."""
        return {
            "rule": self.rule,
            "type": self.rule_type,
            "action": self.action,
            "checked": self.checked,
            "failed": self.failed,
            "ratio": round(self.ratio, 6),
            "status": self.status,
            "observed": self.observed,
            "samples": self.samples,
        }


@dataclass(frozen=True, kw_only=True)
class BatchQuality:
    """A staged or failed batch and its rules' results, in the order they were checked."""

    table: str
    batch_id: str
    status: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    at: float  # when it was recorded
    results: list[QualityResult]


@dataclass(frozen=True, kw_only=True)
class RuleTotals:
    """A quality rule's results summed over every batch of a table."""

    table: str
    rule: str
    checked: int
    failed: int
    status: str  # the greatest status it had (by name)


@dataclass(frozen=True, kw_only=True)
class BadFile:
    """A raw file the transform could not read, set aside in the lake's bad/ folder."""

    path: str  # where the raw file was
    table: str
    moved_to: str
    reason: str
    at: float


@dataclass(frozen=True, kw_only=True)
class WithdrawnBatch:
    """A staged batch taken back (`run --reprocess`, a resnapshot): its raw files are pending
    again, and the load takes its rows out of the warehouse."""

    batch_id: str
    rows: int  # staged
    rows_quarantined: int
    min_lsn: int
    max_lsn: int


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run of the pipeline's state machine (fields in the order `riverbed runs --json`
    prints them)."""

    run_id: str
    status: str  # running | succeeded | failed | aborted
    trigger: str  # once | every | cron | demo | redrive
    started_at: float
    ended_at: float | None = None
    failed_state: str | None = None
    error: str | None = None
    redrives: int = 0
    pid: int
    host: str
    # succeeded having found nothing to do: the last new_data a task reported was 0
    idle: bool = False

    def process_gone(self) -> bool:
        """A run still called running whose process, on this machine, no longer exists
        (kill -9): it stays 'running' until the next run takes its lock over, so whoever
        shows it (`riverbed runs`, `riverbed status`) calls it died instead."""
        if self.status != "running" or self.host != socket.gethostname():
            return False
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return True
        except (OSError, TypeError, ValueError):
            return False  # alive under another user, or no pid to check
        return False


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    """Something that happened in a run: a state entered, an attempt, a retry scheduled, a
    success, a failure, a catch, a skip on redrive (state ``-`` for the run's own)."""

    run_id: str
    seq: int  # 1, 2, ... within the run
    ts: float
    state: str
    event: str
    attempt: int | None = None
    error_class: str | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # counts, delay, output: JSON


AlarmStateName = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]


@dataclass(frozen=True, kw_only=True)
class AlarmStatus:
    """An alarm's state as of its latest evaluation (what `riverbed status` shows)."""

    alarm: str
    state: AlarmStateName
    since: float  # when it entered this state
    reason: str  # of the latest evaluation
    value: float | None  # the newest datapoint, None when all were missing


@dataclass(frozen=True, kw_only=True)
class AlarmTransition:
    """An alarm that changed state at ``ts``."""

    alarm: str
    old_state: AlarmStateName
    new_state: AlarmStateName
    reason: str
    value: float | None
    ts: float


@dataclass(frozen=True)
class Lag:
    """How far the lake is behind the source: the WAL bytes not yet visible in it, and the age
    of the oldest change not in it (riverbed.capture.lag measures it; status shows it)."""

    bytes: int
    seconds: float


AuditPath = Literal["cli", "api", "web", "export", "govern"]


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """Something the audit trail records: a gateway decision (``action`` query, with the SQL
    read, the tables it named, whether it was allowed and why, the rows returned and how
    long it took) or a governance change (apply, rotate, forget, ... with its ``detail``).
    ``detail`` never holds a secret (riverbed.govern.audit checks it)."""

    ts: float
    principal: str
    path: AuditPath  # the way in: cli | api | web | export, or govern for a change
    action: str  # query | apply | rotate | forget | ...
    sql: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # JSON
    tables: tuple[str, ...] = ()
    allowed: bool = True
    reason: str | None = None
    rows: int | None = None
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class AuditRecord(AuditEntry):
    """An entry as the audit trail holds it: its place in the chain (``id``: 1, 2, ...), the
    hash of the record before it (``prev_hash``; 64 zeros for the first) and its own
    ``hash`` over both (riverbed.state.audit_chain)."""

    id: int
    prev_hash: str
    hash: str


AuditProblem = Literal["edited", "deleted", "inserted"]


@dataclass(frozen=True, kw_only=True)
class AuditCheck:
    """What walking the audit chain found: intact (``problem`` None) over ``records``
    records, or the first record that was edited, deleted or inserted (``record``: its id,
    for a deleted one the id it had) and why."""

    records: int
    head: str  # the hash of the last record that verified (64 zeros when none)
    problem: AuditProblem | None = None
    record: int | None = None
    why: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, kw_only=True)
class Tombstone:
    """A data subject erased by `riverbed forget`: the table and the key (its values joined by
    ','), never the values erased. ``completed_at`` is None while the erasure is under way."""

    table: str
    key: str
    requested_at: float
    completed_at: float | None

    @property
    def done(self) -> bool:
        return self.completed_at is not None
