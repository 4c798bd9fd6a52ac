"""One transform run: every table's pending raw files -> staged batches, exactly once.

Per batch, in this order (each step sees the previous one's output):

1. read the batch's raw files, unified across schema versions, in source order;
2. resolve unchanged-TOAST marks against the previous version of the same key, looked up in
   the batch and then in earlier raw files (capture leaves the mark; this is where it is
   honoured, so no later stage sees a wrong or missing value);
3. apply the table's SQL transforms and filter (deletes always pass the filter: they carry
   only the key, and dropping one would keep a deleted row alive downstream);
4. run the quality rules on the transformed rows; ``fail`` stops the batch before anything is
   written, ``quarantine`` moves the failing rows aside with the rule and reason, ``warn`` only
   records;
5. apply the PII hook (keyed HMAC) to both outputs;
6. write the staged and quarantined Parquet, then commit them with the bookmarks and results
   (bookmarks.py explains why that makes a batch exactly once).

Dimension sources keep every version (SCD2 needs them all, in LSN order); fact sources keep
their events. Tables are processed so that a table referenced by another's rules comes first,
so "exists in the dimension" includes what this very run staged.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from riverbed.config.loader import Project
from riverbed.config.models import QualityRule, TableConfig
from riverbed.errors import ConfigError, ErrorClass, RiverbedError, UsageError
from riverbed.lake.declared import Declared, as_declared, declared_columns
from riverbed.lake.layout import (
    bad_path,
    bad_prefix,
    batch_file_path,
    set_aside_from,
)
from riverbed.lake.lock import ProcessLock
from riverbed.lake.manifest import LakeFile, Manifest, open_manifest
from riverbed.lake.parquet import write_table
from riverbed.lake.positions import parse_lsn
from riverbed.lake.reader import RowGroupFilter, concat_versions, resolve_unchanged_toast
from riverbed.lake.schema import CDC_COLUMNS, OP, TOAST_UNCHANGED
from riverbed.lake.schema import POSITION_COLUMNS as POSITION
from riverbed.lake.storage import LakeError, LakeFileMissing, LakeStorage, open_storage
from riverbed.observe.logs import log_context, log_event
from riverbed.transform.bookmarks import Batch, BatchOutcome, Bookmarks, RuleResult
from riverbed.transform.duckdb_engine import DuckDBEngine
from riverbed.transform.engine import DIALECT, TransformEngine, TransformEngineError, open_engine
from riverbed.transform.pii import pii_key, protect
from riverbed.transform.rules import (
    BATCH,
    CompiledChecks,
    RuleContext,
    check_schema,
    compile_checks,
)

LOST = "__lost"  # why a raw row lost a value to its declared type (riverbed.lake.declared)
TYPE_RULE = "type"  # the built-in check that sets such rows aside
PART_ROWS = 512 * 1024  # two parts of a default batch: one per core, few fsyncs
SAMPLES = 5
log = logging.getLogger("riverbed.transform")
_T = TypeVar("_T")


class QualityFailure(RiverbedError):
    """A rule with action fail found bad data: the batch was not staged. Never retried: the
    orchestrator's error class ``quality``."""

    error_class = ErrorClass.QUALITY


@dataclass
class TableRun:
    table: str
    batches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(b["rows_in"] for b in self.batches)

    @property
    def rows_out(self) -> int:
        return sum(b["rows_out"] for b in self.batches)

    @property
    def rows_quarantined(self) -> int:
        return sum(b["rows_quarantined"] for b in self.batches)


@dataclass
class TransformResult:
    engine: str
    tables: list[TableRun] = field(default_factory=list)
    bad_files: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def batches(self) -> int:
        return sum(len(t.batches) for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
            "batches": self.batches,
            "tables": {
                t.table: {
                    "rows_in": t.rows_in,
                    "rows_out": t.rows_out,
                    "rows_quarantined": t.rows_quarantined,
                    "batches": t.batches,
                }
                for t in self.tables
            },
            "bad_files": self.bad_files,
        }


def _not_a_column(key: str, column: str, table: str, columns: list[str]) -> ConfigError:
    close = difflib.get_close_matches(column, columns, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return ConfigError(
        [
            f"{key}: column {column} is not in {table} (columns: {', '.join(columns)}); "
            f"{hint}fix {key} in riverbed.yaml"
        ]
    )


def table_order(tables: dict[str, TableConfig]) -> list[str]:
    """Config order, except that a table comes after every table its rules refer to."""
    needs = {name: referenced_tables(name, cfg, tables) for name, cfg in tables.items()}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return  # a cycle is allowed: the table then checks against earlier runs only
        visiting.add(name)
        for other in sorted(needs[name]):
            visit(other)
        visiting.discard(name)
        ordered.append(name)

    for name in tables:
        visit(name)
    return ordered


def referenced_tables(name: str, cfg: TableConfig, tables: dict[str, Any]) -> set[str]:
    """Config tables a table's rules read (besides itself)."""
    found: set[str] = set()
    for rule in cfg.quality:
        if rule.reference:
            found.add(rule.reference.split(".")[0])
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is not None:  # else reported by the rule compiler, with the rule's name
                found.update(t.name for t in tree.find_all(exp.Table) if t.name in tables)
    found.discard(name)
    return found


def _rule_columns(cfg: TableConfig) -> set[str] | None:
    """Every column name a table's rules mention (any qualifier): what reading another table's
    current rows needs. None when a rule selects ``*``."""
    names: set[str] = set()
    for rule in cfg.quality:
        if rule.reference:
            names.add(rule.reference.split(".")[1])
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                continue
            if any(isinstance(s, exp.Star) for s in tree.find_all(exp.Star)):
                return None
            names.update(c.name for c in tree.find_all(exp.Column))
    return names


def _key_lookups(
    table: str, cfg: TableConfig, other: str, other_keys: list[str]
) -> list[tuple[str, str]] | None:
    """How ``table``'s rules read ``other``: [(other's key column, own column)] when every rule
    that reads it looks rows up by key equal to a column of the checked row (a references
    rule, or ``o.key = table.column`` in custom SQL); None when some rule reads it otherwise,
    or by a column a transform computes (the rows are chosen by the raw batch's values before
    any transform runs), so all of its current rows are needed."""
    if len(other_keys) != 1:
        return None
    key = other_keys[0]
    pairs: list[tuple[str, str]] = []
    for rule in cfg.quality:
        if rule.reference and rule.reference.split(".")[0] == other:
            if rule.reference.split(".")[1] != key or rule.column is None:
                return None
            pairs.append((key, rule.column))
        elif rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                return None
            tables = [t for t in tree.find_all(exp.Table) if t.name == other]
            if not tables:
                continue
            if rule.type == "sql_dataset":
                return None
            for ref in tables:
                alias = ref.alias_or_name
                found = None
                for eq in tree.find_all(exp.EQ):
                    sides = [eq.this, eq.expression]
                    if not all(isinstance(c, exp.Column) for c in sides):
                        continue
                    theirs = [c for c in sides if c.table == alias and c.name == key]
                    mine = [c for c in sides if c.table == table]
                    if theirs and mine:
                        found = (key, mine[0].name)
                if found is None:
                    return None
                pairs.append(found)
    if any(own in cfg.transforms for _, own in pairs):
        return None
    return pairs or None


def _rule_tree(rule: QualityRule) -> exp.Expr | None:
    """A custom rule's SQL as a query tree (a row-level predicate in a WHERE), or None when it
    does not parse: the rule compiler then says why, naming the rule. Read-only: shared."""
    return _parsed(rule.query_text)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> exp.Expr | None:
    # each batch asks several questions of the same rules: parse each text once per process
    try:
        return sqlglot.parse_one(text, read=DIALECT)
    except sqlglot.errors.ParseError:
        return None


class TransformRun:
    """Runs the transform stage of one project on one engine."""

    def __init__(
        self,
        project: Project,
        storage: LakeStorage,
        manifest: Manifest,
        engine: TransformEngine,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        retries: int | None = None,
    ):
        self.project = project
        self.config = project.config
        # see _with_retries; None: transform.retries
        self.retries = self.config.transform.retries if retries is None else retries
        self.storage = storage
        self.manifest = manifest
        self.bookmarks = Bookmarks(manifest)
        self.engine = engine
        self.now = now
        self._key: bytes | None = None
        self._context: RuleContext | None = None
        self._current: dict[tuple[str, frozenset[str] | None], pa.Table] = {}

    # --- the run --------------------------------------------------------------------------

    def run(self, tables: Sequence[str] | None = None) -> TransformResult:
        started = time.monotonic()
        result = TransformResult(self.engine.name)
        chosen = set(tables) if tables else set(self.config.tables)
        for name in table_order(self.config.tables):
            if name not in chosen:
                continue
            result.tables.append(self.run_table(name, result))
        result.seconds = time.monotonic() - started
        return result

    def run_table(self, table: str, result: TransformResult) -> TableRun:
        """Every pending batch of ``table``, in order, as a two-step pipeline: batch N's output
        is written on a thread while batch N+1 is read and checked. Each step alone leaves one
        of two cores idle a third of the time (the Python between engine calls, the encoder's
        tail), together they fill each other's gaps. Bookmarks still commit on this thread and
        in batch order, each before the next batch's output is written; a table whose checks
        read its own earlier batches (see _reads_own_batches) checks a batch only once the one
        before is committed."""
        run = TableRun(table)
        self._finish_set_asides(table)
        overlap = not _reads_own_batches(table, self.config.tables[table])
        writing: list[_Written] = []  # at most one: the batch before

        def land() -> None:
            while writing:
                self._commit(writing.pop(), run)  # popped first: a failed commit is not redone

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="transform-write") as writer:
            try:
                while True:
                    batches = self.bookmarks.plan(table, self.config.transform.batch_rows)
                    if not batches:
                        return run
                    planned = len(run.batches) + len(batches)
                    for batch in batches:
                        if not overlap:
                            land()
                        try:
                            checked = self._with_retries(partial(self._check, batch))
                        except _BadFile as bad:
                            land()
                            result.bad_files.append(self._set_aside(bad.file, bad.reason))
                            break  # plan again without it
                        land()
                        write = partial(self._with_retries, partial(self._write_outputs, checked))
                        writing.append(_Written(checked, writer.submit(write), planned))
                    else:
                        land()
            except Exception:
                land()  # batch N passed its checks: a failure of N+1 does not undo it
                raise

    def _commit(self, writing: _Written, run: TableRun) -> None:
        """Wait for a batch's output to be written, then commit it with its bookmarks."""
        checked = writing.checked
        outputs = writing.outputs.result()
        outcome = BatchOutcome(
            checked.batch,
            self.engine.name,
            checked.rows_in,
            checked.good.num_rows,
            checked.bad.num_rows,
            outputs,
            checked.results,
            time.monotonic() - checked.started,
        )
        self.bookmarks.commit(outcome)
        for cached in [k for k in self._current if k[0] == checked.batch.table]:
            del self._current[cached]  # its current rows just changed
        run.batches.append(
            {
                "batch_id": checked.batch.batch_id,
                "files": len(checked.batch.files),
                "rows_in": outcome.rows_in,
                "rows_out": outcome.rows_out,
                "rows_quarantined": outcome.rows_quarantined,
                "quality": [r.as_dict() for r in outcome.results],
            }
        )
        with log_context(table=run.table):
            log_event(
                log,
                "batch_staged",
                f"{run.table}: batch {len(run.batches)} of {writing.planned} staged, "
                f"{outcome.rows_in:,} rows in, {outcome.rows_quarantined:,} quarantined",
                batch_id=checked.batch.batch_id,
                rows_in=outcome.rows_in,
                rows_out=outcome.rows_out,
                rows_quarantined=outcome.rows_quarantined,
                seconds=round(outcome.seconds, 3),
            )

    def _with_retries(self, work: Callable[[], _T]) -> _T:
        """``work`` (one batch's check, or the writing of its output), again after a
        transient LakeError or TransformEngineError, ``self.retries`` times with backoff.

        The transform's own retries, for a step that failed on a blip: only that step is
        redone. ``riverbed run --stage transform`` relies on them (``transform.retries``);
        under the orchestrator they are off (``retries=0``) when the transform state's Retry
        rules take transient errors, which then rerun the task (staged batches are kept):
        both retrying would multiply the attempts (retries x max_attempts)."""
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return work()
            except (LakeError, TransformEngineError) as exc:
                if not exc.transient or attempt == attempts:
                    raise
                time.sleep(min(0.2 * 2**attempt, 5.0))  # the lock or the network may clear
        raise AssertionError("unreachable")

    # --- one batch ------------------------------------------------------------------------

    def _check(self, batch: Batch) -> _Checked:
        """Read, transform and check one batch; its rows split into staged and quarantined,
        PII protected, ready to write. Raises QualityFailure (recorded) if a rule fails it."""
        started = time.monotonic()
        cfg = self.config.tables[batch.table]
        # the captured schema versions, read once for the column check and the typed read
        declared = declared_columns(self.manifest, batch.table)
        self._check_columns_exist(batch, cfg, declared)
        raw = self._read(batch, declared)
        rows_in = raw.num_rows
        raw = self._resolve_toast(batch, raw)
        raw, untyped = self._untyped(raw)
        self.engine.register("batch", raw)
        # the transforms are a view: the rule query reads through it, so the transformed rows
        # are materialised once, with their flags
        shape = self._shape(batch, cfg, raw.schema)
        _check_pii(batch.table, cfg, shape)
        checks = self._checks(batch, cfg, raw, shape)
        # in source order: _flag has the engine sort whatever could have shuffled it
        flagged = self._flag_beside(cfg, raw, shape, checks)
        if flagged is None:
            flagged = self._flag(batch, checks)
        if not self.engine.returns_reference_types:
            flagged = _conform(flagged, shape)
        dataset = [self._dataset_result(c.rule, c.query, shape, flagged) for c in checks.dataset]
        results = self._row_results(cfg, checks, flagged) + dataset
        if any(r.status == "fail" for r in results):
            outcome = BatchOutcome(
                batch, self.engine.name, rows_in, 0, 0, [], results, time.monotonic() - started
            )
            self.bookmarks.record_failure(outcome, "quality rule with action fail")
            failed = [r for r in results if r.status == "fail"]
            names = ", ".join(f"{r.rule} ({r.failed} of {r.checked} rows)" for r in failed)
            raise QualityFailure(
                f"{batch.table}: batch {batch.batch_id} stopped by {names}; nothing of it was "
                "staged. See `riverbed status` for samples; fix the source data, or change the "
                f"rule's action under tables.{batch.table}.quality, then run again"
            )
        good, bad = self._split(cfg, checks, flagged)
        if untyped.num_rows:
            results.append(_untyped_result(cfg, rows_in, untyped))
            bad = concat_versions([bad, untyped]) if bad.num_rows else untyped
        key = self._pii_key() if cfg.pii else b""
        good = protect(good, dict(cfg.pii), key)
        bad = protect(bad, dict(cfg.pii), key)
        return _Checked(batch, started, rows_in, good, bad, results)

    def _check_columns_exist(self, batch: Batch, cfg: TableConfig, declared: Declared) -> None:
        """Config keys and reference columns must be columns of their table: only the
        captured schema can tell, so this is the first place to say so, by config key, before
        a library error about a field or a binder deep inside the batch would."""
        versions = {file.schema_version for file in batch.files}
        own = self._columns_of(batch.table, declared, versions)
        for key in cfg.keys:
            if own and key not in own:
                raise _not_a_column(f"tables.{batch.table}.keys", key, batch.table, own)
        for i, rule in enumerate(cfg.quality):
            if rule.reference is None:
                continue
            table, column = rule.reference.split(".")
            theirs = (
                own
                if table == batch.table
                else self._columns_of(table, declared_columns(self.manifest, table), None)
            )
            if theirs and column not in theirs:
                where = f"tables.{batch.table}.quality.{i}.reference"
                raise _not_a_column(where, column, table, theirs)

    def _columns_of(self, table: str, declared: Declared, versions: set[int] | None) -> list[str]:
        """The columns ``table`` has after its transforms, in its captured schema ``versions``
        (None: any) of ``declared``; empty when capture has not described the table yet."""
        names = [
            name
            for version, columns in declared.items()
            if versions is None or version in versions
            for name in columns
        ]
        if not names:
            return []
        return list(dict.fromkeys([*names, *self.config.tables[table].transforms]))

    @staticmethod
    def _untyped(raw: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The rows that kept every value in its declared type, and those that did not, set
        aside with the reason (rule "type"), whatever the config's rules say."""
        lost = raw.column(LOST)
        raw = raw.drop_columns([LOST])
        if lost.null_count == raw.num_rows:
            return raw, _EMPTY
        kept = pc.is_null(lost)
        untyped = raw.filter(pc.invert(kept))
        untyped = untyped.append_column("_rule", pa.repeat(pa.scalar(TYPE_RULE), untyped.num_rows))
        untyped = untyped.append_column("_reason", lost.filter(pc.invert(kept)))
        return raw.filter(kept), untyped

    def _write_outputs(self, checked: _Checked) -> list[LakeFile]:
        """The batch's staged and quarantined Parquet (safe on another thread: storage only)."""
        batch = checked.batch
        return self._write(batch, "staged", checked.good) + self._write(
            batch, "quarantine", checked.bad
        )

    def _read(self, batch: Batch, declared: Declared) -> pa.Table:
        """The batch's raw rows in source order, each column as its ``declared`` type; a row
        that lost a value to that (see riverbed.lake.declared) says why in column LOST."""
        parts = []
        for file in batch.files:
            try:
                part = pq.read_table(self.storage.open_input(file.path))
            except LakeError:
                raise
            except (pa.ArrowInvalid, OSError) as exc:
                raise _BadFile(file, f"{type(exc).__name__}: {exc}") from exc
            part, lost = as_declared(part, declared.get(file.schema_version, {}))
            # mostly no value is lost: an all-null column costs no Python list of a million Nones
            why = (
                pa.nulls(part.num_rows, pa.string())
                if lost is None
                else pa.array(lost, pa.string())
            )
            parts.append(part.append_column(LOST, why))
        return self._sorted(concat_versions(parts))

    def _resolve_toast(self, batch: Batch, raw: pa.Table) -> pa.Table:
        """Fill unchanged-TOAST values from the previous version of each key: in this batch,
        else in the raw files before it. Marks that nothing can fill stay on the row."""
        marked = raw.column("_toast_unchanged") if "_toast_unchanged" in raw.column_names else None
        if marked is None or marked.null_count == raw.num_rows:
            return raw
        keys = self.config.tables[batch.table].keys
        resolved = resolve_unchanged_toast(raw, keys)
        marks = resolved.column("_toast_unchanged")
        if marks.null_count == resolved.num_rows:
            return resolved
        # earlier versions of the still-marked keys, from the files before this batch
        open_rows = pc.invert(pc.is_null(marks))
        wanted = resolved.filter(open_rows).select(keys)
        needed = sorted({n for names in marks.to_pylist() if names for n in names})
        history = self._history(batch, keys, wanted, needed)
        if history.num_rows == 0:
            return resolved
        flag = "__from_history"
        combined = concat_versions(
            [
                history.append_column(flag, pa.array(np.ones(history.num_rows, dtype=bool))),
                raw.append_column(flag, pa.array(np.zeros(raw.num_rows, dtype=bool))),
            ]
        )
        order = pc.sort_indices(combined, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
        combined = resolve_unchanged_toast(combined.take(order), keys)
        mine = combined.filter(pc.invert(combined.column(flag)))
        return mine.select(raw.column_names)

    def _history(
        self, batch: Batch, keys: list[str], wanted: pa.Table, needed: list[str]
    ) -> pa.Table:
        """The versions of the ``wanted`` keys before this batch that can fill the ``needed``
        columns: read projected to those columns, then cut down to what resolution uses (see
        latest_values), so a long-lived table's history costs a scan, not a Python walk."""
        parts = []
        key_set = wanted.group_by(keys).aggregate([])
        columns = [*keys, *needed, OP, *POSITION, TOAST_UNCHANGED]
        for file in self.manifest.files("raw", batch.table):
            if file.max_lsn > batch.min_lsn or file in batch.files:
                continue
            parquet = pq.ParquetFile(self.storage.open_input(file.path))
            present = [c for c in dict.fromkeys(columns) if c in parquet.schema_arrow.names]
            part = parquet.read(columns=present)
            # join on the keys alone (Arrow joins cannot carry list columns), then take
            index = part.select(keys).append_column("__r", pa.array(np.arange(part.num_rows)))
            part = part.take(index.join(key_set, keys, join_type="left semi").column("__r"))
            if part.num_rows:
                parts.append(part)
        if not parts:
            return pa.table({})
        return latest_values(concat_versions(parts), keys, needed)

    def _checks(
        self, batch: Batch, cfg: TableConfig, raw: pa.Table, shape: pa.Schema
    ) -> CompiledChecks:
        referenced = referenced_tables(batch.table, cfg, self.config.tables)
        references = {}
        for other in sorted(referenced):
            relation = f"current_{other}"
            lookups = _key_lookups(batch.table, cfg, other, self.config.tables[other].keys)
            restrict = None
            if lookups is not None:
                # every rule reads `other` by its key: only the keys this batch names matter
                restrict = [
                    (key, pc.unique(raw.column(own)))
                    for key, own in lookups
                    if own in raw.column_names
                ]
            rows = self._current_rows(other, _rule_columns(cfg), restrict=restrict)
            self.engine.register(relation, rows)
            references[other] = relation
        current = None
        if _reads_own_rows(batch.table, cfg):
            current = f"current_{batch.table}"
            lookups = _own_lookups(batch.table, cfg)
            if lookups is None:
                rows = self._current_rows(batch.table, None, shape)
            else:
                # only the columns the rules compare and the rows holding the batch's values:
                # read for every batch, all of it would be everything the table ever staged
                restrict = [
                    (theirs, pc.unique(raw.column(own)))
                    for theirs, own in lookups
                    if own in raw.column_names
                ]
                columns = {theirs for theirs, _ in lookups}
                if columns == {*cfg.keys}:
                    # by key: every version of a wanted key passes, file by file
                    rows = self._current_rows(batch.table, columns, shape, restrict=restrict)
                else:
                    # by another column, only once each key's current version is known: an
                    # older version may hold a value the key no longer does
                    rows = _holding(
                        self._current_rows(batch.table, columns, shape), _tests(restrict)
                    )
            self.engine.register(current, rows)
        ctx = RuleContext(
            table=batch.table,
            keys=list(cfg.keys),
            columns=list(shape.names),
            now=self.now(),
            current=current,
            references=references,
            recent_counts=self.bookmarks.recent_counts(batch.table),
            types={f.name: f.type for f in shape},
            tables=list(self.config.tables),
        )
        checks = compile_checks("transformed", cfg.quality, ctx)
        self._context = ctx
        return checks

    def _shape(self, batch: Batch, cfg: TableConfig, schema: pa.Schema) -> pa.Schema:
        """Register the transforms as view ``transformed``; returns its columns and types
        (DuckDB's, the dialect of the config, whichever engine runs)."""
        statement = transform_statement(batch.table, cfg, schema)
        try:
            shape = _reference_schema(statement, schema)
            self.engine.register_view("transformed", statement)
            return shape
        except TransformEngineError as exc:
            if exc.transient:
                raise
            raise TransformEngineError(
                f"{batch.table}: transforms/filter: {exc}; fix tables.{batch.table}.transforms "
                f"or .filter (columns: {', '.join(schema.names)})"
            ) from exc

    def _flag(self, batch: Batch, checks: CompiledChecks) -> pa.Table:
        # joins and windows (some rules need them) shuffle rows: then the engine sorts them
        # back, in parallel; plain per-row checks keep the input order in an engine that
        # keeps_input_order
        if not checks.row_rules:
            everything = exp.select(exp.Star()).from_("transformed")
            if self.engine.keeps_input_order:
                return self.engine.query(everything)
            return self.engine.query(everything.order_by(exp.column("_lsn"), exp.column("_seq")))
        shuffles = _shuffles(checks)
        ordered = (
            checks.flagged.order_by(exp.column("_lsn"), exp.column("_seq"))
            if shuffles or not self.engine.keeps_input_order
            else checks.flagged
        )
        try:
            if shuffles and self.engine.keeps_input_order:
                return self._flag_in_order(checks, ordered)
            return self.engine.query(ordered)
        except TransformEngineError as exc:
            if exc.transient:
                raise
            # one statement runs every rule: find the rule at fault, so the message names it
            for rule in checks.row_rules:
                assert self._context is not None
                single = compile_checks("transformed", [rule], self._context)
                try:
                    self.engine.query(single.flagged.limit(0))
                except TransformEngineError as culprit:
                    raise TransformEngineError(
                        f"{batch.table}: quality rule {rule.label}: {culprit}; fix it under "
                        f"tables.{batch.table}.quality"
                    ) from exc
            raise

    def _flag_beside(
        self, cfg: TableConfig, raw: pa.Table, shape: pa.Schema, checks: CompiledChecks
    ) -> pa.Table | None:
        """The flagged rows, each column the transforms leave alone taken from ``raw`` as it
        is, when the engine keeps_input_order and keeps every row of the batch (no filter);
        None otherwise. The engine computes only the transformed columns and the flags:
        copying every column in and out of it cost as much as all the rules. Rules that
        shuffle rows (joins, windows) have just those columns sorted back into source order,
        not whole rows."""
        if not self.engine.keeps_input_order or cfg.filter:
            return None
        computed = [n for n in shape.names if n in cfg.transforms]
        narrow = _positions_and_flags(checks, computed)
        if narrow is None:
            return None
        if _shuffles(checks):
            narrow = narrow.order_by(*(exp.column(c) for c in POSITION))
        try:
            result = self.engine.query(narrow)
        except TransformEngineError as exc:
            if exc.transient:
                raise
            return None  # _flag runs it again and finds the rule at fault
        if not _aligned(result, raw):
            return None
        columns = []
        for field_ in shape:
            column = (result if field_.name in cfg.transforms else raw).column(field_.name)
            if column.type != field_.type:
                column = column.cast(field_.type)
            columns.append(column)
        helpers = result.schema.names[len(POSITION) + len(computed) :]
        fields = [*shape, *(result.schema.field(n) for n in helpers)]
        return pa.Table.from_arrays(
            [*columns, *(result.column(n) for n in helpers)], schema=pa.schema(fields)
        )

    def _flag_in_order(self, checks: CompiledChecks, ordered: exp.Select) -> pa.Table:
        """The flagged rows in source order when the rules shuffle them in an engine that
        keeps_input_order, and a filter drops rows (else _flag_beside does it).

        Sorting the whole result costs twice the query that computes it: every column of
        every row goes through the sort. So only the positions and flags are sorted, and the
        rows are read a second time, without the rules' joins, which keeps their order; the
        two are put side by side once their positions are seen to match row for row."""
        narrow = _positions_and_flags(checks, [])
        if narrow is None:
            return self.engine.query(ordered)
        flags = self.engine.query(narrow.order_by(*(exp.column(c) for c in POSITION)))
        rows = self.engine.query(exp.select(exp.Star()).from_("transformed"))
        if not _aligned(flags, rows):
            return self.engine.query(ordered)
        for name in flags.column_names[len(POSITION) :]:
            rows = rows.append_column(name, flags.column(name))
        return rows

    def _dataset_result(
        self, rule: QualityRule, query: exp.Select | None, shape: pa.Schema, rows: pa.Table
    ) -> RuleResult:
        checked = _checked_rows(rows)
        if query is None:  # the schema rule: decided on the Arrow schema
            passed, observed = check_schema(rule, shape)
            failed = 0 if passed else 1
        else:
            row = self.engine.query(query).to_pylist()[0]
            checked = int(row["checked"] or 0)
            failed = int(row["failed"] or 0)
            passed = bool(row["passed"])
            observed = row["observed"]
        return RuleResult(
            rule.label,
            rule.type,
            rule.action,
            checked,
            failed,
            "pass" if passed else _status(rule.action),
            observed,
        )

    def _row_results(
        self, cfg: TableConfig, checks: CompiledChecks, flagged: pa.Table
    ) -> list[RuleResult]:
        checked = _checked_rows(flagged)
        results = []
        for i, rule in enumerate(checks.row_rules):
            failing = flagged.column(f"_fail_{i}")
            failed = int(pc.sum(failing.cast(pa.int64())).as_py() or 0)
            samples: list[Any] = []
            if failed:
                rows = flagged.filter(failing).slice(0, SAMPLES).select(list(cfg.keys))
                samples = [
                    r[cfg.keys[0]] if len(cfg.keys) == 1 else list(r.values())
                    for r in rows.to_pylist()
                ]
            results.append(
                RuleResult(
                    rule.label,
                    rule.type,
                    rule.action,
                    checked,
                    failed,
                    "pass" if failed == 0 else _status(rule.action),
                    None,
                    samples,
                )
            )
        return results

    def _split(
        self, cfg: TableConfig, checks: CompiledChecks, flagged: pa.Table
    ) -> tuple[pa.Table, pa.Table]:
        helper = [c for c in flagged.column_names if c.startswith(("_fail_", "_reason_"))]
        quarantining = [i for i, r in enumerate(checks.row_rules) if r.action == "quarantine"]
        if not quarantining:
            return flagged.drop_columns(helper), _EMPTY
        mask = flagged.column(f"_fail_{quarantining[0]}")
        for i in quarantining[1:]:
            mask = pc.or_(mask, flagged.column(f"_fail_{i}"))
        if not pc.any(mask).as_py():
            return flagged.drop_columns(helper), _EMPTY  # the usual case: no copy
        bad = flagged.filter(mask)
        good = flagged.filter(pc.invert(mask)).drop_columns(helper)
        if bad.num_rows == 0:
            return good, _EMPTY
        labels = [
            pc.if_else(bad.column(f"_fail_{i}"), checks.row_rules[i].label, None)
            for i in quarantining
        ]
        reasons = [
            pc.if_else(bad.column(f"_fail_{i}"), bad.column(f"_reason_{i}"), None)
            for i in quarantining
        ]
        rule_column = pc.binary_join_element_wise(*labels, ", ", null_handling="skip")
        reason_column = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip")
        bad = bad.drop_columns(helper).append_column("_rule", rule_column)
        bad = bad.append_column("_reason", reason_column)
        return good, bad

    def _write(self, batch: Batch, stage: str, table: pa.Table) -> list[LakeFile]:
        """Write ``table`` as parts of PART_ROWS rows, in parallel: Parquet encoding and ZSTD
        run outside the GIL, so the parts use every core. Part names follow the row order, so
        a retry writes the same files."""
        if table.num_rows == 0:
            return []
        version = max(f.schema_version for f in batch.files)
        starts = list(range(0, table.num_rows, PART_ROWS))

        def write(index: int) -> LakeFile:
            part = table.slice(starts[index], PART_ROWS)
            path = batch_file_path(stage, batch.table, batch.batch_id, index)
            size = write_table(self.storage, path, part)
            lsns = part.column("_lsn")
            return LakeFile(
                path,
                stage,
                batch.table,
                part.num_rows,
                size,
                int(pc.min(lsns).as_py()),
                int(pc.max(lsns).as_py()),
                version,
                False,
            )

        if len(starts) == 1:
            return [write(0)]
        with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 2)) as pool:
            return list(pool.map(write, range(len(starts))))

    def _current_rows(
        self,
        table: str,
        columns: set[str] | None,
        like: pa.Schema | None = None,
        *,
        restrict: list[tuple[str, pa.Array]] | None = None,
    ) -> pa.Table:
        """The latest staged version of every live key of ``table`` (what the dimension will
        hold once loaded), with ``columns`` (None: all) besides its keys.

        Kept for the rest of the run and dropped when ``table`` stages a batch, so a table
        referenced by every batch of another is read once per run, not once per batch.
        """
        cache_key = (table, frozenset(columns) if columns is not None else None)
        cached = self._current.get(cache_key) if restrict is None else None
        if cached is not None:
            return cached
        files = self.manifest.files("staged", table)
        if not files:
            return like.empty_table() if like is not None else self._empty_like(table)
        keys = list(self.config.tables[table].keys)
        tests = _tests(restrict or [])
        pruning = RowGroupFilter(restrict) if restrict else None

        def read(file: LakeFile) -> pa.Table:
            parquet = pq.ParquetFile(self.storage.open_input(file.path))  # one open per file
            wanted = None
            if columns is not None:
                wanted = [
                    n
                    for n in parquet.schema_arrow.names
                    if n in columns or n in keys or n in (OP, *POSITION)
                ]
            if pruning is None:
                part = parquet.read(columns=wanted)
            else:  # only the row groups that can hold a key asked for (by their statistics)
                part = parquet.read_row_groups(pruning.groups(parquet), columns=wanted)
            # keep only the keys asked for, file by file: what is left is small
            return _holding(part, tests)

        # files in parallel: reading and filtering release the GIL
        with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 2)) as pool:
            rows = concat_versions(list(pool.map(read, files)))
        rows = self._sorted(rows)
        rows = rows.append_column("__i", pa.array(np.arange(rows.num_rows)))
        last = rows.select([*keys, "__i"]).group_by(keys).aggregate([("__i", "max")])
        newest = last.column("__i_max")
        latest = rows.take(newest.take(pc.sort_indices(newest))).drop_columns(["__i"])
        latest = latest.filter(pc.not_equal(latest.column("_op"), "D"))
        if restrict is None:
            self._current[cache_key] = latest
        return latest

    def _empty_like(self, table: str) -> pa.Table:
        """No staged rows yet: an empty relation with the table's raw columns, so rules that
        read it still bind."""
        raw = self.manifest.files("raw", table)
        if raw:
            return pq.read_schema(self.storage.open_input(raw[-1].path)).empty_table()
        keys = self.config.tables[table].keys if table in self.config.tables else []
        return pa.table(
            {**{k: pa.array([], pa.string()) for k in keys}, "_op": pa.array([], pa.string())}
        )

    def _sorted(self, table: pa.Table) -> pa.Table:
        # engines return rows in any order; the lake holds them in source order
        if table.num_rows < 2:
            return table
        lsn = table.column("_lsn").to_numpy()
        seq = table.column("_seq").to_numpy()
        steps_lsn, steps_seq = np.diff(lsn), np.diff(seq)
        if bool(np.all((steps_lsn > 0) | ((steps_lsn == 0) & (steps_seq > 0)))):
            return table  # already in order: the common case for DuckDB
        order = pc.sort_indices(table, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
        return table.take(order)

    def _pii_key(self) -> bytes:
        if self._key is None:
            self._key = pii_key(self.project)
        return self._key

    def _set_aside(self, file: LakeFile, reason: str) -> dict[str, Any]:
        """Move an unreadable raw file out of the way, record it, and go on without it.

        Three steps, each safe to be killed after: the copy in bad/ appears whole (a rerun
        reads the original again, finds it bad and copies it again); the manifest records the
        move in one transaction (no batch reads the original from then on); the original is
        deleted last (a rerun deletes it, see _finish_set_asides)."""
        target = bad_path(file.path)
        with suppress(LakeFileMissing):  # already copied by a run that stopped before recording
            self.storage.write_atomic(target, self.storage.read(file.path))
        self.bookmarks.quarantine_file(file, target, reason)
        self.storage.delete(file.path)
        # the run goes on and succeeds without the file's changes: say so where it is seen
        log_event(
            log,
            "raw_file_set_aside",
            f"{file.table}: unreadable raw file {file.path} set aside as {target}, its changes "
            f"left out ({reason})",
            logging.WARNING,
            path=file.path,
            moved_to=target,
        )
        return {"path": file.path, "table": file.table, "moved_to": target, "reason": reason}

    def _finish_set_asides(self, table: str) -> None:
        """Complete what a run killed while setting raw files of ``table`` aside left undone:
        an original still there after its move was recorded is deleted, and a move whose copy
        is in bad/ but whose original is gone unrecorded (the order runs before this one used:
        copy, delete, record) is recorded, so no batch waits for a file that is not there."""
        copies = self.storage.list(bad_prefix(table))
        if not copies:
            return  # the usual case: one listing of an empty folder
        recorded = {b["path"] for b in self.bookmarks.bad_files() if b["table"] == table}
        listed = {f.path: f for f in self.manifest.files("raw", table)}
        for copy in copies:
            original = set_aside_from(copy)
            if original in recorded:
                # (a raw file in the manifest under that name is a new one: kept)
                if original not in listed and self.storage.exists(original):
                    self.storage.delete(original)
            elif original in listed and not self.storage.exists(original):
                self._set_aside(listed[original], "set aside by a run that stopped midway")


def _shuffles(checks: CompiledChecks) -> bool:
    """Whether the rules' query may return rows out of source order (joins, windows)."""
    return checks.flagged.find(exp.Join, exp.Window, exp.Subquery) is not None


def _positions_and_flags(checks: CompiledChecks, columns: list[str]) -> exp.Select | None:
    """The rules' query with the batch's POSITION and ``columns`` in place of all its
    columns (and the flags after them); None if it is not the shape compile_checks builds."""
    head = checks.flagged.expressions[0]
    if not (isinstance(head, exp.Column) and isinstance(head.this, exp.Star)):
        return None
    narrow = checks.flagged.copy()
    kept = (exp.column(n, table=BATCH, quoted=True) for n in [*POSITION, *columns])
    narrow.set("expressions", [*kept, *narrow.expressions[1:]])
    return narrow


def _aligned(one: pa.Table, other: pa.Table) -> bool:
    """Whether two results hold the same changes in the same order, row for row."""
    return one.num_rows == other.num_rows and all(
        pc.all(pc.equal(one.column(c), other.column(c))).as_py() is not False for c in POSITION
    )


@dataclass(frozen=True)
class _Checked:
    """A batch that passed its checks, its outputs not yet written."""

    batch: Batch
    started: float
    rows_in: int
    good: pa.Table
    bad: pa.Table
    results: list[RuleResult]


@dataclass(frozen=True)
class _Written:
    checked: _Checked
    outputs: Future[list[LakeFile]]
    planned: int  # batches of the table this run means to stage, for progress


_Test = tuple[str, Callable[[pa.ChunkedArray], pa.Array]]  # a column, a test of its values


def _tests(restrict: list[tuple[str, pa.Array]]) -> list[_Test]:
    """Membership tests for (column, values) pairs, each built once to apply to many tables."""
    return [(column, _membership(values)) for column, values in restrict]


def _holding(rows: pa.Table, tests: list[_Test]) -> pa.Table:
    """The rows whose value in some column of ``tests`` passes its test (all: no tests)."""
    if not tests:
        return rows
    mask = None
    for column, test in tests:
        found = test(rows.column(column))
        mask = found if mask is None else pc.or_(mask, found)
    return rows.filter(mask)


def _own_lookups(table: str, cfg: TableConfig) -> list[tuple[str, str]] | None:
    """How ``table``'s rules read its own current rows: [(current rows' column, batch column)]
    when each looks rows up by a value the checked batch holds (unique: rows holding one of
    the batch's values; a reference to the table itself: rows the batch's values point to);
    None when a rule reads them otherwise (SQL naming the table), or by a column a transform
    computes (the rows are chosen by the raw batch's values, before any transform)."""
    pairs: list[tuple[str, str]] = []
    for rule in cfg.quality:
        if rule.type == "unique" and rule.column is not None:
            pairs.append((rule.column, rule.column))
        elif rule.reference and rule.column is not None:
            other, column = rule.reference.split(".")
            if other == table:
                pairs.append((column, rule.column))
        elif rule.sql:
            tree = _rule_tree(rule)
            if tree is None or any(t.name == table for t in tree.find_all(exp.Table)):
                return None
    if any(own in cfg.transforms for _, own in pairs):
        return None
    return pairs or None


def _reads_own_batches(table: str, cfg: TableConfig) -> bool:
    """Whether checking a batch reads what this table's earlier batches staged or recorded:
    its current rows (see _reads_own_rows), its recent row counts (row_count)."""
    return _reads_own_rows(table, cfg) or any(r.type == "row_count" for r in cfg.quality)


def _reads_own_rows(table: str, cfg: TableConfig) -> bool:
    """Whether a rule reads the table's current rows: unique (against the warehouse), a
    reference to the table itself, SQL naming it."""
    for rule in cfg.quality:
        if rule.type == "unique":
            return True
        if rule.reference and rule.reference.split(".")[0] == table:
            return True
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                return True  # the rule compiler reports it; assume the worst meanwhile
            if any(t.name == table for t in tree.find_all(exp.Table)):
                return True
    return False


class _BadFile(Exception):
    def __init__(self, file: LakeFile, reason: str):
        super().__init__(reason)
        self.file = file
        self.reason = reason


_EMPTY = pa.table({})


def _conform(rows: pa.Table, shape: pa.Schema) -> pa.Table:
    """Another engine's result in DuckDB's types (the staged files must not depend on the
    engine): each column of ``shape`` cast to its type, the rule helper columns kept."""
    for index, field_ in enumerate(rows.schema):
        if field_.name in shape.names:
            wanted = shape.field(field_.name)
            if field_.type != wanted.type:
                rows = rows.set_column(index, wanted, rows.column(index).cast(wanted.type))
    return rows


def _reference_schema(statement: exp.Select, schema: pa.Schema) -> pa.Schema:
    """The types DuckDB gives ``statement``'s columns, found on an empty input.

    The config's SQL is DuckDB's dialect, so its types are the reference: another engine's
    result (Spark widens decimal products, counts in int32, ...) is cast to them, and the
    staged files are the same whichever engine ran.
    """
    probe = _probe()
    probe.register("batch", schema.empty_table())
    return probe.query(statement).schema


_PROBES = threading.local()


def _probe() -> DuckDBEngine:
    """One small in-memory DuckDB per thread for type probes (opening one per batch costs
    more than the probe)."""
    engine = getattr(_PROBES, "engine", None)
    if engine is None:
        engine = DuckDBEngine(threads=1)
        _PROBES.engine = engine
    return engine


def _member(column: pa.ChunkedArray, values: pa.Array) -> pa.Array:
    """``column`` IN ``values``, one pass (see _membership)."""
    return _membership(values)(column)


def _membership(values: pa.Array) -> Callable[[pa.ChunkedArray], pa.Array]:
    """A test of ``column`` IN ``values`` to apply to many columns. Integer keys in a compact
    range (the usual serial/identity key) use a bitmap, several times faster than hashing."""
    values = values.drop_null()
    if len(values) and pa.types.is_integer(values.type):
        low, high = (v.as_py() for v in pc.min_max(values).values())
        if high - low < 200_000_000:
            bitmap = np.zeros(high - low + 1, dtype=bool)
            bitmap[values.to_numpy() - low] = True

            def by_bitmap(column: pa.ChunkedArray) -> pa.Array:
                if not pa.types.is_integer(column.type):
                    return pc.is_in(column, value_set=values)
                keys = column.combine_chunks().fill_null(low - 1).to_numpy() - low
                inside = (keys >= 0) & (keys <= high - low)
                found = np.zeros(len(keys), dtype=bool)
                found[inside] = bitmap[keys[inside]]
                return pa.array(found)

            return by_bitmap
    return lambda column: pc.is_in(column, value_set=values)


def _check_pii(table: str, cfg: TableConfig, shape: pa.Schema) -> None:
    """A PII column the rows do not have is a typo: skipping it would leave the real column's
    personal data in clear text in every staged file and in the warehouse."""
    missing = [name for name in cfg.pii if name not in shape.names]
    if missing:
        columns = ", ".join(n for n in shape.names if not n.startswith("_"))
        raise ConfigError(
            [
                f"tables.{table}.pii.{missing[0]}: {table} has no column {missing[0]!r}, so "
                f"nothing would be protected; name one of its columns ({columns})"
            ]
        )


def _untyped_result(cfg: TableConfig, rows_in: int, untyped: pa.Table) -> RuleResult:
    rows = untyped.slice(0, SAMPLES).select(list(cfg.keys)).to_pylist()
    samples = [r[cfg.keys[0]] if len(cfg.keys) == 1 else list(r.values()) for r in rows]
    return RuleResult(
        TYPE_RULE, TYPE_RULE, "quarantine", rows_in, untyped.num_rows, "quarantined", None, samples
    )


def _checked_rows(table: pa.Table) -> int:
    return int(pc.sum(pc.not_equal(table.column("_op"), "D").cast(pa.int64())).as_py() or 0)


def _status(action: str) -> str:
    return {"quarantine": "quarantined", "warn": "warn", "fail": "fail"}[action]


def transform_statement(table: str, cfg: TableConfig, schema: pa.Schema) -> exp.Select:
    """SELECT the batch's columns with the table's transforms applied, then its filter.

    A transform named like an existing column replaces it in place; a new name is added after
    the source columns. CDC columns stay last and untouched.
    """
    source = [n for n in schema.names if n not in CDC_COLUMNS]
    cdc = [n for n in schema.names if n in CDC_COLUMNS]
    expressions: dict[str, exp.Expr] = {}
    for name, text in cfg.transforms.items():
        try:
            expressions[name] = sqlglot.parse_one(text, read=DIALECT)
        except sqlglot.errors.ParseError as exc:
            raise ConfigError([f"tables.{table}.transforms.{name} = {text!r}: {exc}"]) from None
    columns: list[exp.Expr] = []
    for name in source:
        if name in expressions:
            columns.append(exp.alias_(expressions.pop(name), name, quoted=True))
        else:
            columns.append(exp.column(name, quoted=True))
    for name, expression in expressions.items():
        columns.append(exp.alias_(expression, name, quoted=True))
    columns.extend(exp.column(n, quoted=True) for n in cdc)
    select = exp.select(*columns).from_("batch")
    if cfg.filter:
        try:
            condition = sqlglot.parse_one(cfg.filter, read=DIALECT)
        except sqlglot.errors.ParseError as exc:
            raise ConfigError([f"tables.{table}.filter = {cfg.filter!r}: {exc}"]) from None
        is_delete = exp.EQ(this=exp.column("_op"), expression=exp.Literal.string("D"))
        select = select.where(exp.or_(is_delete, exp.paren(condition)))
    return select


def latest_values(history: pa.Table, keys: list[str], needed: list[str]) -> pa.Table:
    """The rows of ``history`` that resolving unchanged-TOAST marks after it needs, in source
    order: per key, the latest row holding each needed column's value (not a delete, column
    not marked), and the key's last row; plus every marked insert with the delete just before
    it (a key-changing update, which takes its values from the old key).

    Rows in between only carry marks (the value did not change), so dropping them changes no
    result; a product repriced a thousand times keeps two rows, not a thousand."""
    order = pc.sort_indices(history, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
    history = history.take(order)
    position = pa.array(np.arange(history.num_rows))
    marks = history.column("_toast_unchanged")
    flat = pc.list_flatten(marks)
    parents = pc.list_parent_indices(marks)
    not_delete = pc.not_equal(history.column("_op"), "D")
    keep = [_last_per_key(history.select(keys), position, None)]
    for name in needed:
        if name not in history.column_names:
            continue
        marked = pc.is_in(position, pc.filter(parents, pc.equal(flat, name)))
        holds = pc.and_(not_delete, pc.invert(marked))
        keep.append(_last_per_key(history.select(keys), position, holds))
    marked_insert = pc.and_(
        pc.equal(history.column("_op"), "I"), pc.invert(pc.is_null(marks))
    ).to_numpy(zero_copy_only=False)
    inserts = np.flatnonzero(marked_insert)
    keep.append(inserts)
    keep.append(inserts[inserts > 0] - 1)  # the delete of the old key, checked by the resolver
    rows = np.unique(np.concatenate(keep))
    return history.take(pa.array(rows))


def _last_per_key(keys: pa.Table, position: pa.Array, where: pa.Array | None) -> np.ndarray:
    table = keys.append_column("__p", position)
    if where is not None:
        table = table.filter(where)
    if table.num_rows == 0:
        return np.array([], dtype=np.int64)
    last = table.group_by(keys.column_names).aggregate([("__p", "max")])
    return last.column("__p_max").to_numpy()


def run_transform(
    project: Project,
    *,
    engine: str | None = None,
    tables: Sequence[str] | None = None,
    retries: int | None = None,
) -> TransformResult:
    """Transform every pending raw file of ``tables`` (default: all in config), exactly once.
    ``retries``: of a batch step after a transient error (default ``transform.retries``; 0
    where a caller retries the whole transform itself, see TransformRun._with_retries)."""
    cfg = project.config
    unknown = sorted(set(tables or ()) - set(cfg.tables))
    if unknown:
        raise RiverbedError(
            f"unknown table {', '.join(unknown)}; tables in config: {', '.join(cfg.tables)}"
        )
    storage = open_storage(cfg.lake, project.root)
    with ProcessLock(project.home / "transform.lock", "riverbed run"):
        manifest = open_manifest(project)
        chosen = open_engine(
            engine or cfg.transform.engine, cfg.transform.spark_master, cfg.transform.spark_conf
        )
        try:
            return TransformRun(project, storage, manifest, chosen, retries=retries).run(tables)
        finally:
            chosen.close()
            manifest.close()


def reprocess(project: Project, table: str, start: str) -> list[dict[str, Any]]:
    """Rewind ``table``'s bookmarks to ``start`` (an LSN like 0/16B3748, or an ISO time), so
    the next run transforms those raw files again. Returns the staged batches withdrawn."""
    project.config.require_table(table, "--reprocess")
    cfg = project.config.tables[table]
    if cfg.kind == "dimension":
        # its load passes over every event at or before the dimension's high-water mark, so the
        # batches would be staged again and change nothing, while the run said it loaded them
        raise UsageError(
            f"--reprocess {table}: {table} is a dimension ({cfg.target}), whose versions are "
            "history the facts point at and are not rewritten; changed transforms and rules "
            "apply to its changes from the next run on. --reprocess takes a fact table"
        )
    # every lock a run or a single stage holds: withdrawn between a run's transform and its
    # load, the batches would be missing from that load, which then publishes without them
    with (
        ProcessLock(project.home / "run.lock", "riverbed run"),
        ProcessLock(project.home / "transform.lock", "riverbed run"),
        ProcessLock(project.home / "load.lock", "riverbed run (load)"),
    ):
        manifest = open_manifest(project)
        try:
            lsn = _start_lsn(manifest, table, start)
            return Bookmarks(manifest).rewind(table, lsn)
        finally:
            manifest.close()


# past every position: the state store's integers are signed 64-bit, an LSN unsigned
AFTER_ALL = (1 << 63) - 1


def _start_lsn(manifest: Manifest, table: str, start: str) -> int:
    text = start.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", text):
        return min(parse_lsn(text), AFTER_ALL)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--from {start!r}: give an LSN like 0/16B3748 or a time like 2026-11-27T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    # raw files are partitioned by commit hour: the first file of that hour or later
    later = [f.min_lsn for f in manifest.files("raw", table) if f.committed_from(hour)]
    return min(later) if later else AFTER_ALL
