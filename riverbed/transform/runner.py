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
5. apply the PII hook (keyed HMAC) to both outputs, and null the personal columns of every
   key `riverbed forget` erased (its tombstones): a change captured after the erasure must
   not bring the values back. After the rules, so a scrubbed change is judged on what the
   source sent (a not_null rule on an erased email does not quarantine it); once the batch
   is committed, its raw files that held such values are scrubbed in place too;
6. write the staged and quarantined Parquet, then commit them with the bookmarks and results
   (bookmarks.py explains why that makes a batch exactly once).

Dimension sources keep every version (SCD2 needs them all, in LSN order); fact sources keep
their events. Tables are processed so that a table referenced by another's rules comes first,
so "exists in the dimension" includes what this very run staged.

This module runs those steps in order; each lives in its own module and takes its inputs
explicitly: read.py (1, 2), plan.py (what a table's rules read, once per table), current.py
(the current rows rules read), flag.py (3, 4), write.py (6), bookmarks.py (the commit).
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.config.loader import Project
from riverbed.config.personal import Scrub, scrubs_of
from riverbed.config.tables import TableConfig
from riverbed.errors import ConfigError, ErrorClass, RiverbedError
from riverbed.lake.declared import Declared, declared_columns
from riverbed.lake.lock import project_lock
from riverbed.lake.reader import concat_versions
from riverbed.lake.scrub import scrub, scrub_file
from riverbed.lake.storage import LakeError, LakeStorage, open_storage
from riverbed.observe.logs import log_context, log_event
from riverbed.state import LakeFile, StateStore, open_state
from riverbed.state.records import QualityResult
from riverbed.transform import compacted
from riverbed.transform.bookmarks import Batch, BatchOutcome, Bookmarks
from riverbed.transform.current import CurrentRows
from riverbed.transform.duckdb_engine import DuckDBEngine
from riverbed.transform.engine import TransformEngine, TransformEngineError, open_engine
from riverbed.transform.flag import (
    check_pii,
    flag_rows,
    register_transforms,
    rule_results,
    split,
    untyped_result,
)
from riverbed.transform.pii import pii_key, protect
from riverbed.transform.plan import RulePlan, read_current, table_order
from riverbed.transform.read import (
    BadFile,
    has_marks,
    read_batch,
    resolve_toast,
    split_untyped,
)
from riverbed.transform.rules import CompiledChecks, compile_checks
from riverbed.transform.rules.context import RuleContext
from riverbed.transform.write import Checked, finish_set_asides, set_aside, write_outputs

log = logging.getLogger("riverbed.transform")
_T = TypeVar("_T")


class QualityFailure(RiverbedError):
    """A rule with action fail found bad data: the batch was not staged. Never retried: the
    orchestrator's error class ``quality``."""

    error_class = ErrorClass.QUALITY


@dataclass(frozen=True, kw_only=True)
class StagedBatch:
    """A batch this run staged, and what its quality rules found."""

    batch_id: str
    files: int
    rows_in: int
    rows_out: int
    rows_quarantined: int
    quality: list[QualityResult]

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "files": self.files,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_quarantined": self.rows_quarantined,
            "quality": [r.as_dict() for r in self.quality],
        }


@dataclass
class TableRun:
    table: str
    batches: list[StagedBatch] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return sum(b.rows_in for b in self.batches)

    @property
    def rows_out(self) -> int:
        return sum(b.rows_out for b in self.batches)

    @property
    def rows_quarantined(self) -> int:
        return sum(b.rows_quarantined for b in self.batches)


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
                    "batches": [b.as_dict() for b in t.batches],
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


class TransformRun:
    """Runs the transform stage of one project on one engine."""

    def __init__(
        self,
        project: Project,
        storage: LakeStorage,
        manifest: StateStore,
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
        self._current = CurrentRows(storage, manifest, self.config.tables)
        self._compacting = read_current(self.config.tables)  # see _compact
        self._marked: set[str] = set()  # tables whose batches carried TOAST marks (_compact)
        self._probe: DuckDBEngine | None = None  # see _type_probe
        # per table: the scrubs of its rows with the keys erased (see _erase)
        self._erasures: dict[str, list[tuple[Scrub, set[str]]]] = {}

    # --- the run --------------------------------------------------------------------------

    def run(self, tables: Sequence[str] | None = None) -> TransformResult:
        started = time.monotonic()
        result = TransformResult(self.engine.name)
        chosen = set(tables) if tables else set(self.config.tables)
        try:
            for name in table_order(self.config.tables):
                if name not in chosen:
                    continue
                result.tables.append(self.run_table(name, result))
        finally:
            self._close_probe()
        result.seconds = time.monotonic() - started
        return result

    def _type_probe(self) -> DuckDBEngine:
        """The run's in-memory DuckDB that finds the types of a table's transforms
        (flag.register_transforms). The run owns it: opened on first use, by the thread that
        calls run() (batches are checked there; the writer thread only writes), and closed
        when run() ends. One per run rather than per batch: a fresh one per probe measured
        ~64 ms against ~11 ms for a reused one."""
        if self._probe is None:
            self._probe = DuckDBEngine(threads=1)
        return self._probe

    def _close_probe(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None

    def run_table(self, table: str, result: TransformResult) -> TableRun:
        """Every pending batch of ``table``, in order, as a two-step pipeline: batch N's output
        is written on a thread while batch N+1 is read and checked. Each step alone leaves one
        of two cores idle a third of the time (the Python between engine calls, the encoder's
        tail), together they fill each other's gaps. Bookmarks still commit on this thread and
        in batch order, each before the next batch's output is written; a table whose checks
        read its own earlier batches (RulePlan.reads_own_batches) checks a batch only once the one
        before is committed."""
        run = TableRun(table)
        finish_set_asides(self.storage, self.manifest, self.bookmarks, table)
        plan = RulePlan.of(table, self.config.tables)
        overlap = not plan.reads_own_batches
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
                            checked = self._with_retries(partial(self._check, batch, plan))
                        except BadFile as bad:
                            land()
                            result.bad_files.append(
                                set_aside(self.storage, self.bookmarks, bad.file, bad.reason)
                            )
                            break  # plan again without it
                        land()
                        write = partial(
                            self._with_retries, partial(write_outputs, self.storage, checked)
                        )
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
        self._current.forget(checked.batch.table)  # its current rows just changed
        self._compact(checked.batch.table)
        if checked.erased:
            self._erase_inputs(checked.batch)
        run.batches.append(
            StagedBatch(
                batch_id=checked.batch.batch_id,
                files=len(checked.batch.files),
                rows_in=outcome.rows_in,
                rows_out=outcome.rows_out,
                rows_quarantined=outcome.rows_quarantined,
                quality=outcome.results,
            )
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

    def _compact(self, table: str) -> None:
        """Keep compacted (compacted.py) the current rows of a table some rule reads, and the
        TOAST history of a table whose batches carry marks, so the next read opens a few
        files, not every batch the table staged or consumed. After the commit: the files are
        derived, so a failure here costs the next read its speed, never a row."""
        keys = self.config.tables[table].keys
        try:
            if table in self._compacting:
                compacted.compact(self.storage, self.manifest, table, keys)
            if table in self._marked:
                pending = {f.path for f in self.manifest.transform.pending(table)}
                compacted.compact(
                    self.storage, self.manifest, table, keys, compacted.TOAST, leave=pending
                )
        except (LakeError, OSError, pa.ArrowException) as exc:
            with log_context(table=table):
                log_event(
                    log,
                    "compaction_failed",
                    f"{table}: current rows not compacted ({exc}); read from the staged files",
                    logging.WARNING,
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

    def _check(self, batch: Batch, plan: RulePlan) -> Checked:
        """Read, transform and check one batch; its rows split into staged and quarantined,
        PII protected, ready to write. Raises QualityFailure (recorded) if a rule fails it."""
        started = time.monotonic()
        cfg = self.config.tables[batch.table]
        # the captured schema versions, read once for the column check and the typed read
        declared = declared_columns(self.manifest, batch.table)
        self._check_columns_exist(batch, cfg, declared)
        raw = read_batch(self.storage, batch, declared)
        rows_in = raw.num_rows
        if has_marks(raw):
            self._marked.add(batch.table)
        raw = resolve_toast(self.storage, self.manifest, batch, cfg.keys, raw)
        raw, untyped = split_untyped(raw)
        self.engine.register("batch", raw)
        # the transforms are a view: the rule query reads through it, so the transformed rows
        # are materialised once, with their flags
        shape = register_transforms(self.engine, self._type_probe(), batch.table, cfg, raw.schema)
        check_pii(batch.table, cfg, shape)
        checks, context = self._checks(batch, plan, raw, shape)
        flagged = flag_rows(self.engine, batch.table, cfg, raw, shape, checks, context)
        results = rule_results(self.engine, cfg, shape, checks, flagged)
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
        good, bad = split(checks, flagged)
        if untyped.num_rows:
            results.append(untyped_result(cfg, rows_in, untyped))
            bad = concat_versions([bad, untyped]) if bad.num_rows else untyped
        key = self._pii_key() if cfg.pii else b""
        good, erased = self._erase(batch.table, protect(good, dict(cfg.pii), key))
        bad, erased_bad = self._erase(batch.table, protect(bad, dict(cfg.pii), key))
        return Checked(batch, started, rows_in, good, bad, results, erased + erased_bad)

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

    def _checks(
        self, batch: Batch, plan: RulePlan, raw: pa.Table, shape: pa.Schema
    ) -> tuple[CompiledChecks, RuleContext]:
        """The batch's rules compiled against view ``transformed``, with the context they
        were compiled in (the current rows they read registered in the engine)."""
        cfg = self.config.tables[batch.table]
        references = {}
        for other, lookups in plan.references:
            relation = f"current_{other}"
            restrict = None
            if lookups is not None:
                # every rule reads `other` by its key: only the keys this batch names matter
                restrict = [
                    (key, pc.unique(raw.column(own)))
                    for key, own in lookups
                    if own in raw.column_names
                ]
            rows = self._current.rows(other, plan.rule_columns, restrict=restrict)
            self.engine.register(relation, rows)
            references[other] = relation
        current = None
        if plan.reads_own_rows:
            current = f"current_{batch.table}"
            lookups = plan.own_lookups
            if lookups is None:
                rows = self._current.rows(batch.table, None, shape)
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
                    rows = self._current.rows(batch.table, columns, shape, restrict=restrict)
                else:
                    # by another column: the keys whose current version holds a value (an
                    # older version may hold a value the key no longer does)
                    rows = self._current.rows(batch.table, columns, shape, holding_values=restrict)
            self.engine.register(current, rows)
        ctx = RuleContext(
            table=batch.table,
            keys=list(cfg.keys),
            columns=list(shape.names),
            now=self.now(),
            current=current,
            references=references,
            recent_counts=self.manifest.transform.recent_counts(batch.table),
            types={f.name: f.type for f in shape},
            tables=list(self.config.tables),
        )
        return compile_checks("transformed", cfg.quality, ctx), ctx

    def _erasures_of(self, table: str) -> list[tuple[Scrub, set[str]]]:
        """The scrubs that reach ``table``'s rows, each with its erased keys. Read once per
        table and run: `riverbed forget` holds the transform's lock while it works."""
        if table not in self._erasures:
            self._erasures[table] = [
                (found, keys)
                for erased, found in scrubs_of(self.config, table)
                if (keys := {t.key for t in self.manifest.erasure.tombstones(erased)})
            ]
        return self._erasures[table]

    def _erase(self, table: str, rows: pa.Table) -> tuple[pa.Table, int]:
        """``rows`` with the personal values of erased keys nulled, and how many held some."""
        count = 0
        for found, keys in self._erasures_of(table):
            rows, scrubbed = scrub(rows, found.columns, found.match, keys)
            count += scrubbed
        return rows, count

    def _erase_inputs(self, batch: Batch) -> None:
        """Scrub the raw files of a committed batch that brought an erased key's values back
        from the source (which keeps them until the application erases them there), in place
        as `riverbed forget` does. A kill before this leaves them as captured: `riverbed
        forget` on the key again scrubs them."""
        scrubbed = 0
        for file in batch.files:
            for found, keys in self._erasures_of(batch.table):
                done = scrub_file(self.storage, file.path, found.columns, found.match, keys)
                if done is not None and done[1]:
                    self.manifest.lake.resized(file.path, done[0])
                    scrubbed += 1
        with log_context(table=batch.table):
            log_event(
                log,
                "raw_files_erased",
                f"{batch.table}: {scrubbed} raw file(s) scrubbed of erased keys' changes",
                batch_id=batch.batch_id,
                files=scrubbed,
            )

    def _pii_key(self) -> bytes:
        if self._key is None:
            self._key = pii_key(self.project)
        return self._key


@dataclass(frozen=True)
class _Written:
    checked: Checked
    outputs: Future[list[LakeFile]]
    planned: int  # batches of the table this run means to stage, for progress


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
    with project_lock(project, "transform", "riverbed run"):
        manifest = open_state(project)
        chosen = open_engine(
            engine or cfg.transform.engine, cfg.transform.spark_master, cfg.transform.spark_conf
        )
        try:
            return TransformRun(project, storage, manifest, chosen, retries=retries).run(tables)
        finally:
            chosen.close()
            manifest.close()
