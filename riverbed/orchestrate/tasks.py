"""The task resources a machine's Task states run, each over the lake and the warehouse.

=========== ==================================================================================
check       counts raw files not transformed yet and staged batches not loaded yet (new_data)
transform   quality rules + SQL transforms of every table (or ``table``) into staged batches
stage       prepares the warehouse and truncate-and-loads staging tables (riverbed.load.runner)
dimension   the SCD2 merge of one dimension (``table``) from its staging table
facts       the append of every fact (or ``table``) from its staging table
publish     records what the run made visible (freshness), refreshes the extract
            (riverbed.serve.extracts) and the governed copies (riverbed.serve.copies) and
            prunes old metrics
report      writes orchestration.reports' dashboard snapshots (riverbed.serve.report)
notify      tells orchestration.notify that the run failed (the default Catch handler)
=========== ==================================================================================

Every task returns its counts; numbers become the run's variables (Choice states read
``new_data`` and ``pending_batches``) and per-table counts are recorded as metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from riverbed.config.loader import Project
from riverbed.config.orchestration import TaskResource, TaskState
from riverbed.errors import ErrorClass, RiverbedError, first_line
from riverbed.observe.notify import Dispatcher
from riverbed.orchestrate.executor import StateError
from riverbed.orchestrate.machine import matches
from riverbed.state import StateStore, open_state

if TYPE_CHECKING:
    from riverbed.transform.runner import StagedBatch, TransformResult

log = logging.getLogger("riverbed.run")
# the resources that write the warehouse, and publish after them, which reads it for the
# extract and the governed copies: a run holds a DuckDB warehouse open across them (_hold)
_HOLDING: frozenset[TaskResource] = frozenset({"stage", "dimension", "facts", "publish"})


def _empty_summary() -> dict[str, Any]:
    return {
        "engine": None,
        "batches": 0,
        "tables": {},
        "bad_files": [],
        "load": {"batches": 0, "tables": {}},
    }


@dataclass
class Tasks:
    """Runs one Task state of a run; the error a Catch routed it with tells notify what failed."""

    project: Project
    manifest: StateStore
    run_id: str
    dispatcher: Dispatcher
    engine: str | None = None
    tables: Sequence[str] | None = None
    # asked by publish whether to refresh the extract now (None: always); `run --follow`
    # leaves it to a later run while raw files keep arriving (riverbed.orchestrate.follow)
    extract_due: Callable[[], bool] | None = None
    # what the run did, table by table, in the shapes of TransformResult.as_dict() and
    # LoadResult.as_dict() (`riverbed run --json` prints it)
    summary: dict[str, Any] = field(default_factory=_empty_summary)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # every resource but notify, which runs on the error a Catch took instead of the state
    _resources: dict[TaskResource, Callable[[TaskState], dict[str, Any]]] = field(
        init=False, repr=False, compare=False
    )
    # a DuckDB warehouse held open across the run's load states (see _hold)
    _held: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._resources = {
            "check": self._check,
            "transform": self._transform,
            "stage": self._stage,
            "dimension": self._dimension,
            "facts": self._facts,
            "publish": self._publish,
            "report": self._report,
        }

    def __call__(
        self, _name: str, state: TaskState, _variables: dict[str, float], caught: StateError | None
    ) -> dict[str, Any]:
        if state.resource in _HOLDING:
            self._hold()
        else:
            self.release()
        if state.resource == "notify":
            return self._notify(caught)
        return dict(self._resources[state.resource](state))

    def _hold(self) -> None:
        """Keep a DuckDB warehouse open from the first load state on. DuckDB keeps one
        instance of a file per process, shared by every connection to it: with one held,
        each state's open is a new connection to it (1 ms) rather than the file opened again
        (16-20 ms on a 150 MB warehouse, measured, six times a run), its close checkpoints
        nothing (the last close does, once), and the pages one state read stay in DuckDB's
        buffer pool for the next. Readers wait for a run's load states either way (each
        holds the writer's turn, duckdb_gate); they still get in between runs. PostgreSQL
        has nothing to hold: each state has its own connection."""
        from riverbed.load.warehouse import open_warehouse

        cfg = self.project.config.warehouse
        if cfg.engine != "duckdb":
            return
        with self._lock:  # a Parallel's branches start together
            if self._held is None:
                self._held = open_warehouse(cfg, self.project.root)

    def release(self) -> None:
        """Close what _hold keeps open: before a state that does not load (a report opens
        the warehouse read-only, which DuckDB refuses beside a writable instance in the
        same process) and when the run ends."""
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            held.close()

    # --- resources ----------------------------------------------------------------------------

    def _check(self, state: TaskState) -> dict[str, Any]:
        tables = self._tables(state)
        new_raw = len(self.manifest.transform.pending_raw_files(tables))
        pending = pending_batches(self.manifest, tables)
        return {
            "new_raw_files": new_raw,
            "pending_batches": pending,
            "new_data": new_raw + pending,
            "unpublished": int(self._unpublished()),
        }

    def _unpublished(self) -> bool:
        """Whether loads were committed after the last publish saw the warehouse: a run killed
        between its load and its publish (or in it) left them, and with nothing new to load
        the next runs would never publish them: the extract and the governed copies would
        stay behind the warehouse until more data came."""
        loaded_at = self.manifest.loads.last_loaded_at()
        if loaded_at is None:
            return False
        published = self.manifest.metrics.newest("warehouse_loaded_at").get("warehouse_loaded_at")
        return published is None or published[0] < loaded_at

    def _transform(self, state: TaskState) -> dict[str, Any]:
        from riverbed.transform.runner import run_transform

        # transient failures are retried at one layer: this state's Retry rules when they take
        # them, the transform's own retries (transform.retries) only when they do not;
        # both would multiply the attempts
        retriers = (
            state.retry if state.retry is not None else self.project.config.orchestration.retry
        )
        retried = any(
            matches(r.errors, ErrorClass.TRANSIENT) and r.max_attempts > 0 for r in retriers
        )
        result = run_transform(
            self.project,
            engine=self.engine,
            tables=self._chosen(state),
            retries=0 if retried else None,
        )
        self._summarise_transform(result)
        metrics = self.manifest.metrics
        failures = 0
        worst = 0.0
        for table in result.tables:
            checks = [r for b in table.batches for r in b.quality]
            failing = [r for r in checks if r.failed > 0]
            # rounded as the batch's JSON shows it (QualityResult.as_dict)
            ratio = max((round(r.ratio, 6) for r in checks), default=0.0)
            failures += len(failing)
            worst = max(worst, ratio)
            checked, failed = quality_rows(table.batches)
            metrics.record(
                {
                    "transform_rows_in": table.rows_in,
                    "transform_rows_out": table.rows_out,
                    "transform_rows_quarantined": table.rows_quarantined,
                    "transform_batches": len(table.batches),
                    "quality_failures": len(failing),
                    "quality_rows_checked": checked,
                    "quality_rows_failed": failed,
                },
                {"table": table.table},
            )
        return {
            "rows_in": sum(t.rows_in for t in result.tables),
            "rows_staged": sum(t.rows_out for t in result.tables),
            "rows_quarantined": sum(t.rows_quarantined for t in result.tables),
            "batches_staged": result.batches,
            "quality_failures": failures,
            "quality_failure_ratio": worst,
            "bad_files": len(result.bad_files),
        }

    def _stage(self, state: TaskState) -> dict[str, Any]:
        chosen = set(self._tables(state))
        with self._loader() as loader:
            loader.prepare(chosen)
            staged = loader.stage_round(chosen)
            pending = pending_batches(self.manifest, sorted(chosen))
            if pending and not staged:
                raise RiverbedError(
                    f"{pending} staged batches are pending but none could be staged; "
                    "see `riverbed status`"
                )
        return {
            "staged_batches": sum(staged.values()),
            "staged_tables": len(staged),
        }

    def _dimension(self, state: TaskState) -> dict[str, Any]:
        assert state.table is not None
        with self._loader() as loader:
            dim = loader.model.dimension(state.table)
            if dim is None:
                raise RiverbedError(f"tables.{state.table} is not a dimension")
            batches, rows = loader.merge_dimension(dim)
        self._summarise_load(dim.name, dim.source, len(batches), rows)
        if batches:
            self.manifest.metrics.record(
                {"load_rows": rows, "load_batches": len(batches)}, {"table": dim.name}
            )
        return {"loaded_rows": rows, "loaded_batches": len(batches)}

    def _facts(self, state: TaskState) -> dict[str, Any]:
        rows_total = batches_total = 0
        # only the configured tables: a batch of a table since taken out of the config is
        # never loaded, and counting it as pending sent the machine back to stage without end
        chosen = self._tables(state)
        with self._loader() as loader:
            for fact in loader.model.facts:
                if fact.source not in chosen:
                    continue
                batches, rows, left = loader.append_fact(fact)
                self._summarise_load(fact.name, fact.source, len(batches), rows, left.as_dict())
                if batches:
                    self.manifest.metrics.record(
                        {"load_rows": rows, "load_batches": len(batches)}, {"table": fact.name}
                    )
                rows_total += rows
                batches_total += len(batches)
        pending = pending_batches(self.manifest, chosen)
        return {
            "loaded_rows": rows_total,
            "loaded_batches": batches_total,
            "pending_batches": pending,
        }

    def _publish(self, _state: TaskState) -> dict[str, Any]:
        values = {"published_runs": 1.0}
        loaded_at = self.manifest.loads.last_loaded_at()
        if loaded_at is not None:
            values["warehouse_loaded_at"] = loaded_at
        if self.extract_due is None or self.extract_due():
            refreshed = self._refresh_extract()
        else:  # the next refresh takes these loads too: it starts from its own watermark
            refreshed = {"extract_refresh_deferred": 1.0}
        values |= refreshed
        self.manifest.metrics.record(values)
        return {
            "published": 1,
            "extract_refreshed": int("extract_refreshed_at" in refreshed),
            **self._refresh_copies(),
        }

    def _refresh_copies(self) -> dict[str, int]:
        """Bring the governed copies (governance.copies) to what the run loaded. The run's
        data is committed already: a failure here fails the publish state with one line,
        and queries answer live, as without copies, until a publish refreshes them."""
        from riverbed.load.warehouse import open_warehouse
        from riverbed.serve.copies import refresh_copies
        from riverbed.serve.queries import read_catalog

        cfg = self.project.config
        if not cfg.governance.copies:  # copies left from an earlier config are never read
            return {}
        warehouse = open_warehouse(cfg.warehouse, self.project.root)
        try:
            done = refresh_copies(self.project, warehouse, read_catalog(warehouse))
        except RiverbedError as exc:
            raise RiverbedError(
                f"governed copies not refreshed: {first_line(exc)}; governed queries answer "
                "from the tables themselves until the next publish refreshes them"
            ) from exc
        finally:
            warehouse.close()
        return {f"copies_{k}": v for k, v in done.as_dict().items()}

    def _report(self, _state: TaskState) -> dict[str, Any]:
        """Each report of orchestration.reports, as its principal; a failure is one line
        naming the report (RiverbedError, terminal: the run's load stays committed)."""
        from riverbed.serve.report import PAGES, Request, make_report

        files = 0
        for report in self.project.config.orchestration.reports:
            out = self.project.path(report.out)
            request = Request(
                report.principal, out, tuple(report.pages or PAGES), tuple(report.formats)
            )
            try:
                files += len(make_report(self.project, request))
            except RiverbedError as exc:
                raise RiverbedError(f"report as {report.principal} into {out}: {exc}") from None
        return {"reports": len(self.project.config.orchestration.reports), "report_files": files}

    def _refresh_extract(self) -> dict[str, float]:
        """Refresh the extract; its metrics. A failure is one error line and a metric, never
        the run's: the load stays, and readers keep the previous generation."""
        from riverbed.serve.extracts.refresh import refresh

        try:
            done = refresh(self.project, self.manifest, self.run_id)
        except Exception as exc:
            log.error(
                "publish: the extract could not be refreshed, readers keep the previous one: %s",
                first_line(exc) or type(exc).__name__,
            )
            return {"extract_refresh_failures": 1.0}
        if done is None:  # no semantic layer in this warehouse: nothing to extract
            return {}
        generation = done.generation
        values = {
            "extract_refreshed_at": generation.refreshed_at,
            "extract_refresh_seconds": done.seconds,
            "extract_cells_refreshed": float(done.cells),
        }
        if done.relabelled is not None:
            values["extract_cells_relabelled"] = float(done.relabelled.cells)
            values["extract_relabel_seconds"] = done.relabelled.seconds
        if generation.loaded_at is not None:
            values["extract_loaded_at"] = generation.loaded_at
        return values

    def _notify(self, err: StateError | None) -> dict[str, Any]:
        """Tell orchestration.notify that the run failed with ``err``, the StateError the
        Catch that led here took (None when no Catch did)."""
        targets = self.project.config.orchestration.notify
        event = {
            "kind": "run",
            "run_id": self.run_id,
            "status": "failed",
            "state": getattr(err, "state", None),
            "error_class": getattr(err, "error_class", None),
            "error": getattr(err, "message", None),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "redrive": f"riverbed run --redrive {self.run_id}",
        }
        if targets:
            self.dispatcher.send(targets, event)
        return {"notified": len(targets)}

    # --- helpers -----------------------------------------------------------------------------

    def _summarise_transform(self, result: TransformResult) -> None:
        """Add ``result`` to the run's summary, which is JSON already (`riverbed run
        --json` prints it)."""
        with self._lock:
            self.summary["engine"] = result.engine
            self.summary["batches"] += result.batches
            self.summary["bad_files"] += result.bad_files
            for table in result.tables:
                into = self.summary["tables"].setdefault(
                    table.table,
                    {"rows_in": 0, "rows_out": 0, "rows_quarantined": 0, "batches": []},
                )
                into["rows_in"] += table.rows_in
                into["rows_out"] += table.rows_out
                into["rows_quarantined"] += table.rows_quarantined
                into["batches"] += [b.as_dict() for b in table.batches]

    def _summarise_load(
        self,
        target: str,
        source: str,
        batches: int,
        rows: int,
        left_out: dict[str, int] | None = None,
    ) -> None:
        """``left_out``: a fact's counts of the changes its append left out (LeftOut)."""
        with self._lock:
            load = self.summary["load"]
            into = load["tables"].setdefault(target, {"source": source, "batches": 0, "rows": 0})
            into["batches"] += batches
            into["rows"] += rows
            for name, count in (left_out or {}).items():
                into[name] = into.get(name, 0) + count
            load["batches"] += batches

    def _chosen(self, state: TaskState) -> list[str] | None:
        if state.table is not None:
            return [state.table]
        return list(self.tables) if self.tables else None

    def _tables(self, state: TaskState) -> list[str]:
        """The tables a state works on: those chosen, else every configured one."""
        return self._chosen(state) or list(self.project.config.tables)

    @contextmanager
    def _loader(self) -> Iterator[Any]:
        """A Loader on its own warehouse and state-store connections (a Parallel's branches
        each have theirs)."""
        from riverbed.lake.storage import open_storage
        from riverbed.load.runner import Loader
        from riverbed.load.warehouse import open_warehouse

        cfg = self.project.config
        manifest = open_state(self.project)
        warehouse = open_warehouse(cfg.warehouse, self.project.root)
        try:
            yield Loader(
                self.project, open_storage(cfg.lake, self.project.root), manifest, warehouse
            )
        finally:
            warehouse.close()
            manifest.close()


def pending_batches(manifest: StateStore, tables: Sequence[str] | None) -> int:
    """Staged batches not loaded into the warehouse yet."""
    return len({(f.table, f.batch_id) for f in manifest.loads.unloaded(tables)})


def quality_rows(batches: list[StagedBatch]) -> tuple[int, int]:
    """(rows checked, rows failed) by the quality rules of ``batches``: the alarm metric
    quality_failure_ratio divides their sums over its period (observe.alarms.RATIOS), so one
    bad row in a small batch weighs one row, not the batch's share. Every rule of a batch
    checks the same rows; a row failing two rules counts twice, up to the rows checked."""
    checked = failed = 0
    for batch in batches:
        rows = max((r.checked for r in batch.quality), default=0)
        checked += rows
        failed += min(rows, sum(r.failed for r in batch.quality))
    return checked, failed
