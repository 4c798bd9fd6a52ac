"""The contract of the state store's transform repository (store.transform), run against every
implementation: what the transform, the load, status and the run's check rely on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from riverbed.lake.layout import bad_path, batch_file_path, raw_file_path
from riverbed.state import LakeFile
from riverbed.state.records import BadFile, BatchRecord, QualityResult, WithdrawnBatch

HOUR = 1_764_237_600 * 1_000_000  # 2025-11-27 10:00 UTC, in microseconds


def raw(table: str, lsn: int, rows: int = 10) -> LakeFile:
    return LakeFile(
        path=raw_file_path(table, HOUR, lsn, lsn + 9, 1, 0),
        stage="raw",
        table=table,
        rows=rows,
        bytes=100,
        min_lsn=lsn,
        max_lsn=lsn + 9,
        schema_version=1,
    )


def output(stage: str, batch: BatchRecord, n: int = 0) -> LakeFile:
    return LakeFile(
        path=batch_file_path(stage, batch.table, batch.batch_id, n),
        stage=stage,
        table=batch.table,
        rows=batch.rows_out if stage == "staged" else batch.rows_quarantined,
        bytes=100,
        min_lsn=batch.min_lsn,
        max_lsn=batch.max_lsn,
        schema_version=1,
    )


def batch_of(
    inputs: list[LakeFile], *, status: str = "staged", quarantined: int = 0
) -> BatchRecord:
    rows = sum(f.rows for f in inputs)
    return BatchRecord(
        batch_id=f"{inputs[0].table}-{inputs[-1].max_lsn}",
        table=inputs[0].table,
        engine="duckdb",
        status=status,
        input_files=len(inputs),
        rows_in=rows,
        rows_out=rows - quarantined,
        rows_quarantined=quarantined,
        min_lsn=min(f.min_lsn for f in inputs),
        max_lsn=max(f.max_lsn for f in inputs),
        seconds=0.5,
        error="quality rule with action fail" if status == "failed" else None,
    )


def result(rule: str, checked: int, failed: int = 0, **kw: Any) -> QualityResult:
    return QualityResult(
        rule=rule,
        rule_type=kw.pop("rule_type", "not_null"),
        action=kw.pop("action", "warn"),
        checked=checked,
        failed=failed,
        status=kw.pop("status", "warn" if failed else "pass"),
        **kw,
    )


def commit(store: Any, inputs: list[LakeFile], **kw: Any) -> BatchRecord:
    """Commit a batch of ``inputs`` with a staged file (and a quarantined one, if any rows
    were), one passing rule; the batch's record."""
    batch = batch_of(inputs, **kw)
    outputs = [output("staged", batch)]
    if batch.rows_quarantined:
        outputs.append(output("quarantine", batch))
    store.transform.commit(
        batch, [f.path for f in inputs], [result("not_null(id)", batch.rows_in)], outputs
    )
    return batch


def paths(files: list[LakeFile]) -> list[str]:
    return [f.path for f in files]


def test_a_committed_batch_consumes_its_inputs_and_shows_its_outputs(state_store: Any) -> None:
    a, b, c = raw("orders", 100), raw("orders", 200), raw("orders", 300)
    state_store.lake.add([a, b, c])
    assert paths(state_store.transform.pending("orders")) == paths([a, b, c])

    batch = commit(state_store, [a, b], quarantined=3)

    assert paths(state_store.transform.pending("orders")) == [c.path]
    assert state_store.transform.pending_raw_files() == [c.path]
    assert paths(state_store.lake.files("staged", "orders")) == [output("staged", batch).path]
    assert paths(state_store.lake.files("quarantine", "orders")) == [
        output("quarantine", batch).path
    ]
    assert state_store.transform.recent_counts("orders") == [20]
    (seen,) = state_store.transform.quality()
    assert (seen.batch_id, seen.status, seen.rows_in, seen.rows_out, seen.rows_quarantined) == (
        batch.batch_id,
        "staged",
        20,
        17,
        3,
    )


def test_a_batch_commit_that_fails_midway_leaves_nothing_of_it_visible(state_store: Any) -> None:
    a, b = raw("orders", 100), raw("orders", 200)
    state_store.lake.add([a, b])
    batch = batch_of([a])

    def results_then_crash() -> Iterator[QualityResult]:
        yield result("not_null(id)", 10)
        raise OSError("killed midway")

    with pytest.raises(OSError, match="killed midway"):
        state_store.transform.commit(
            batch, [a.path], results_then_crash(), [output("staged", batch)]
        )
    # and a commit inside the caller's transaction goes with it
    with pytest.raises(RuntimeError), state_store.transaction():
        state_store.transform.commit(batch, [a.path], [], [output("staged", batch)])
        raise RuntimeError("the stage failed after the commit")

    assert paths(state_store.transform.pending("orders")) == paths([a, b])
    assert state_store.transform.pending_raw_files(["orders"]) == paths([a, b])
    assert state_store.lake.files("staged") == []
    assert state_store.transform.quality() == []
    assert state_store.transform.recent_counts("orders") == []


def test_a_failed_batch_keeps_its_results_and_consumes_nothing(state_store: Any) -> None:
    a = raw("orders", 100)
    state_store.lake.add([a])
    failed = batch_of([a], status="failed")
    rules = [result("range(qty)", 10, 4, action="fail", status="fail", samples=[[7], [9]])]

    state_store.transform.record(failed, rules)

    assert paths(state_store.transform.pending("orders")) == [a.path]
    assert state_store.transform.recent_counts("orders") == []  # staged batches only
    (seen,) = state_store.transform.quality("orders")
    assert seen.status == "failed" and seen.results == rules

    # the rerun stages the same batch: its results replace the failed attempt's
    staged = commit(state_store, [a])
    (seen,) = state_store.transform.quality("orders")
    assert seen.batch_id == staged.batch_id == failed.batch_id and seen.status == "staged"
    assert [r.rule for r in seen.results] == ["not_null(id)"]


def test_pending_raw_files_exclude_consumed_and_set_aside_ones(state_store: Any) -> None:
    a, b, c = raw("orders", 100), raw("orders", 200), raw("orders", 300)
    item = raw("items", 100)
    state_store.lake.add([a, b, c, item])
    commit(state_store, [a])

    state_store.transform.set_aside(b, bad_path(b.path), "not a parquet file")

    assert paths(state_store.transform.pending("orders")) == [c.path]
    assert sorted(state_store.transform.pending_raw_files()) == sorted([c.path, item.path])
    assert state_store.transform.pending_raw_files(["items"]) == [item.path]
    assert paths(state_store.lake.files("raw", "orders")) == paths([a, c])
    (moved,) = state_store.lake.files("bad", "orders")
    assert moved.path == bad_path(b.path) and moved.rows == b.rows
    (bad,) = state_store.transform.bad_files()
    assert (bad.path, bad.table, bad.moved_to, bad.reason) == (
        b.path,
        "orders",
        bad_path(b.path),
        "not a parquet file",
    )
    # a raw file landing again under a path once set aside is not counted as pending
    state_store.lake.add([b])
    assert sorted(state_store.transform.pending_raw_files(["orders"])) == [c.path]


def test_withdrawing_gives_the_inputs_back_and_hides_the_batch_files(state_store: Any) -> None:
    a, b, c = raw("orders", 100), raw("orders", 200), raw("orders", 300)
    item = raw("items", 300)
    state_store.lake.add([a, b, c, item])
    first = commit(state_store, [a])
    second = commit(state_store, [b, c], quarantined=2)
    other = commit(state_store, [item])

    withdrawn = state_store.transform.withdraw("orders", 250)

    assert withdrawn == [
        WithdrawnBatch(
            batch_id=second.batch_id,
            rows=18,
            rows_quarantined=2,
            min_lsn=200,
            max_lsn=309,
        )
    ]
    assert paths(state_store.transform.pending("orders")) == paths([b, c])
    assert paths(state_store.lake.files("staged", "orders")) == [output("staged", first).path]
    assert state_store.lake.files("quarantine", "orders") == []
    assert paths(state_store.lake.files("staged", "items")) == [output("staged", other).path]
    assert state_store.transform.pending("items") == []
    assert state_store.transform.recent_counts("orders") == [10]
    assert [q.batch_id for q in state_store.transform.quality("orders")] == [first.batch_id]
    # the load takes its rows out of the warehouse, then forgets it
    assert state_store.transform.withdrawn("orders") == [second.batch_id]
    assert state_store.transform.withdrawn("items") == []
    # withdrawn once: a second rewind finds it no more
    assert state_store.transform.withdraw("orders", 250) == []
    state_store.transform.forget_withdrawn("orders", [second.batch_id])
    assert state_store.transform.withdrawn("orders") == []


def test_quality_shows_the_latest_batches_of_each_table(state_store: Any) -> None:
    orders = [raw("orders", lsn) for lsn in (100, 200, 300)]
    item = raw("items", 100)
    state_store.lake.add([*orders, item])
    batches = [commit(state_store, [f]) for f in orders]
    failed = batch_of([item], status="failed")
    rules = [
        result("not_null(id)", 10),
        result("unique(id)", 10, 2, rule_type="unique", observed="2 duplicates", samples=[[1]]),
    ]
    state_store.transform.record(failed, rules)

    latest = state_store.transform.quality(limit_batches=2)

    # by table, newest first
    assert [(q.table, q.batch_id) for q in latest] == [
        ("items", failed.batch_id),
        ("orders", batches[2].batch_id),
        ("orders", batches[1].batch_id),
    ]
    assert latest[0].results == rules  # in the order they were checked
    assert [q.batch_id for q in state_store.transform.quality()] == [
        failed.batch_id,
        batches[2].batch_id,
    ]
    assert [q.batch_id for q in state_store.transform.quality("orders", 5)] == [
        b.batch_id for b in reversed(batches)
    ]
    assert state_store.transform.recent_counts("orders", limit=2) == [10, 10]


def test_failing_rules_and_quarantined_rows_add_up_every_batch(state_store: Any) -> None:
    assert state_store.transform.failing_rules() == []
    assert state_store.transform.quarantined_rows() == 0
    a, b = raw("orders", 100), raw("orders", 200)
    state_store.lake.add([a, b])
    for file, failed in ((a, 3), (b, 1)):
        batch = batch_of([file], quarantined=failed)
        state_store.transform.commit(
            batch,
            [file.path],
            [
                result("range(qty)", 10, failed, action="quarantine", status="quarantined"),
                result("not_null(id)", 10),
            ],
            [output("staged", batch)],
        )

    (rule,) = state_store.transform.failing_rules()
    assert (rule.table, rule.rule, rule.checked, rule.failed, rule.status) == (
        "orders",
        "range(qty)",
        20,
        4,
        "quarantined",
    )
    assert state_store.transform.quarantined_rows() == 4


def test_bad_files_come_oldest_first(state_store: Any) -> None:
    files = [raw("orders", 300), raw("items", 100), raw("orders", 100)]
    state_store.lake.add(files)
    for n, file in enumerate(files):
        state_store.transform.set_aside(file, bad_path(file.path), f"reason {n}")

    bad = state_store.transform.bad_files()
    assert [(b.path, b.table, b.moved_to, b.reason) for b in bad] == [
        (f.path, f.table, bad_path(f.path), f"reason {n}") for n, f in enumerate(files)
    ]
    assert [b.at for b in bad] == sorted(b.at for b in bad)
    assert all(isinstance(b, BadFile) for b in bad)
