"""The state store's contract for the load stage (riverbed.state.store.LoadState): what the
loader relies on, run against every implementation (the ``state_store`` fixture).

A staged batch is pending until recorded as loaded; recording it empties its table's staging
record in the same step; a fact's plan is read back only for the batches it was recorded with;
a transaction the loader opens around a repository's writes keeps them or drops them all.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import reopen_store
from riverbed.state import LakeFile, LoadBatch, Staging


def batch(batch_id: str, table: str = "orders", **fields: Any) -> LoadBatch:
    values: dict[str, Any] = {
        "target": f"fact_{table}",
        "rows": 10,
        "seconds": 0.5,
        "loaded_at": 1000.0,
    }
    return LoadBatch(batch_id=batch_id, table=table, **(values | fields))


def staging(table: str, *batch_ids: str, rows: int = 7, plan: str | None = None) -> Staging:
    return Staging(table=table, batch_ids=batch_ids, rows=rows, staged_at=500.0, plan=plan)


def test_a_new_store_has_nothing_loaded_or_staged(state_store: Any) -> None:
    loads = state_store.loads
    assert loads.loaded() == []
    assert loads.loaded("orders") == []
    assert loads.staging("orders") is None
    assert loads.last_loaded_at() is None


def test_a_batch_recorded_as_loaded_is_read_back_as_recorded(state_store: Any) -> None:
    recorded = batch("b1", rows=42, seconds=1.25, loaded_at=1234.5, target="dim_orders")
    state_store.loads.record_loaded([recorded])
    assert state_store.loads.loaded("orders") == [recorded]
    assert state_store.loads.loaded() == [recorded]


def test_loaded_batches_are_kept_per_table(state_store: Any) -> None:
    loads = state_store.loads
    loads.record_loaded([batch("b1", "orders"), batch("b2", "orders")])
    loads.record_loaded([batch("b1", "customers", loaded_at=2000.0)])
    assert {b.batch_id for b in loads.loaded("orders")} == {"b1", "b2"}
    assert [(b.table, b.batch_id) for b in loads.loaded("customers")] == [("customers", "b1")]
    assert {(b.table, b.batch_id) for b in loads.loaded()} == {
        ("orders", "b1"),
        ("orders", "b2"),
        ("customers", "b1"),
    }
    assert loads.loaded("payments") == []


def test_a_batch_loaded_again_is_recorded_once_with_its_newest_load(state_store: Any) -> None:
    # a crash after the warehouse committed applies the batch again: one record, the last
    loads = state_store.loads
    loads.record_loaded([batch("b1", rows=10, loaded_at=1000.0)])
    loads.record_loaded([batch("b1", rows=12, loaded_at=1100.0)])
    assert [(b.batch_id, b.rows, b.loaded_at) for b in loads.loaded("orders")] == [
        ("b1", 12, 1100.0)
    ]


def test_the_last_load_time_is_the_newest_batchs(state_store: Any) -> None:
    loads = state_store.loads
    loads.record_loaded([batch("b1", loaded_at=1000.0), batch("b2", loaded_at=3000.5)])
    loads.record_loaded([batch("b1", "customers", loaded_at=2000.0)])
    assert loads.last_loaded_at() == 3000.5


def test_the_batches_loaded_since_a_time_are_the_later_ones_oldest_first(
    state_store: Any,
) -> None:
    loads = state_store.loads
    loads.record_loaded([batch("b1", loaded_at=1000.0), batch("b2", loaded_at=3000.5)])
    loads.record_loaded([batch("b1", "customers", loaded_at=2000.0)])
    assert [(b.table, b.batch_id) for b in loads.loaded(since=1000.0)] == [
        ("customers", "b1"),
        ("orders", "b2"),
    ]
    assert [b.batch_id for b in loads.loaded("orders", since=1000.0)] == ["b2"]
    assert loads.loaded(since=3000.5) == []


def test_a_withdrawn_batch_is_no_longer_loaded(state_store: Any) -> None:
    loads = state_store.loads
    loads.record_loaded([batch("b1"), batch("b2"), batch("b1", "customers")])
    loads.forget_loaded("orders", ["b1"])
    assert [b.batch_id for b in loads.loaded("orders")] == ["b2"]
    assert [b.batch_id for b in loads.loaded("customers")] == ["b1"]  # another table's stays
    loads.forget_loaded("orders", ["b2", "never-loaded"])
    assert loads.loaded("orders") == []
    assert loads.last_loaded_at() == 1000.0  # customers' b1


def test_staging_is_read_back_as_recorded_and_replaced_by_the_next(state_store: Any) -> None:
    loads = state_store.loads
    loads.stage(staging("orders", "b2", "b1", rows=7))
    assert loads.staging("orders") == staging("orders", "b2", "b1", rows=7)  # in its order
    assert loads.staging("customers") is None
    loads.stage(staging("orders", "b3", rows=3))
    assert loads.staging("orders") == staging("orders", "b3", rows=3)


def test_unstaged_staging_is_gone_and_only_that_tables(state_store: Any) -> None:
    loads = state_store.loads
    loads.stage(staging("orders", "b1"))
    loads.stage(staging("customers", "c1"))
    loads.unstage("orders")
    assert loads.staging("orders") is None
    assert loads.staging("customers") == staging("customers", "c1")
    loads.unstage("orders")  # staging that is gone already: nothing to do
    assert loads.staging("orders") is None


def test_recording_batches_as_loaded_empties_their_tables_staging(state_store: Any) -> None:
    loads = state_store.loads
    loads.stage(staging("orders", "b1", "b2"))
    loads.stage(staging("customers", "c1"))
    loads.record_loaded([batch("b1"), batch("b2")])
    assert loads.staging("orders") is None
    assert loads.staging("customers") == staging("customers", "c1")  # not applied yet


def test_a_facts_plan_is_read_back_with_the_batches_it_was_recorded_for(
    state_store: Any,
) -> None:
    loads = state_store.loads
    loads.stage(staging("orders", "b1", "b2", plan='{"order": [], "window": null}'))
    assert loads.staging("orders").plan == '{"order": [], "window": null}'
    # staged again without a plan (a dimension's, or a version that recorded none): the plan
    # of other batches is never taken for these
    loads.stage(staging("orders", "b3"))
    assert loads.staging("orders") == staging("orders", "b3")
    # staged again with the very batches the plan was recorded for: it holds for them again
    loads.stage(staging("orders", "b1", "b2"))
    assert loads.staging("orders").plan == '{"order": [], "window": null}'
    loads.stage(staging("orders", "b1", "b2", plan='{"order": ["k"], "window": null}'))
    assert loads.staging("orders").plan == '{"order": ["k"], "window": null}'


def test_writes_in_a_transaction_that_fails_are_all_undone(state_store: Any) -> None:
    # the loader forgets withdrawn batches together with the transform's withdrawals
    loads = state_store.loads
    loads.record_loaded([batch("b1"), batch("b2")])
    loads.stage(staging("orders", "b3"))
    with pytest.raises(RuntimeError, match="dies"), state_store.transaction():
        loads.forget_loaded("orders", ["b1"])
        loads.unstage("orders")
        loads.record_loaded([batch("b4")])
        raise RuntimeError("dies before the transaction commits")
    assert {b.batch_id for b in loads.loaded("orders")} == {"b1", "b2"}
    assert loads.staging("orders") == staging("orders", "b3")


def test_writes_in_a_transaction_are_kept_together(state_store: Any) -> None:
    loads = state_store.loads
    loads.record_loaded([batch("b1"), batch("b2")])
    with state_store.transaction():
        loads.forget_loaded("orders", ["b1"])
        loads.stage(staging("orders", "b3"))
    assert [b.batch_id for b in loads.loaded("orders")] == ["b2"]
    assert loads.staging("orders") == staging("orders", "b3")


def staged(table: str, batch_id: str, part: int = 0, lsn: int = 10) -> LakeFile:
    return LakeFile(
        path=f"staged/{table}/batch={batch_id}/part-{part}.parquet",
        stage="staged",
        table=table,
        rows=3,
        bytes=100,
        min_lsn=lsn,
        max_lsn=lsn + 5,
        schema_version=1,
    )


def test_the_unloaded_files_are_the_staged_ones_of_batches_not_loaded(state_store: Any) -> None:
    loads = state_store.loads
    files = [
        staged("orders", "b2", lsn=20),
        staged("orders", "b1", 0),
        staged("orders", "b1", 1),
        staged("items", "b1"),
    ]
    state_store.lake.add(files)
    assert [f.path for f in loads.unloaded(["orders"])] == [
        files[1].path,
        files[2].path,
        files[0].path,
    ]
    assert loads.unloaded(["orders"])[0] == files[1]  # every field read back
    loads.record_loaded([batch("b1", "orders")])  # the same id in another table stays pending
    assert {(f.table, f.batch_id) for f in loads.unloaded()} == {("orders", "b2"), ("items", "b1")}
    assert loads.unloaded([]) == []
    loads.forget_loaded("orders", ["b1"])  # a withdrawn load: pending again
    assert len(loads.unloaded(["orders"])) == 3


def test_staged_files_recorded_before_their_batch_was_a_column_get_it(state_store: Any) -> None:
    """A store written by an earlier release: its staged files' batch ids come from their
    paths when the unloaded ones are asked for (opening a store never writes)."""
    state_store.lake.add([staged("orders", "b1"), staged("orders", "b2")])
    with state_store._db.write() as db:  # as an earlier release left them
        db.execute("update lake_files set batch_id = null")
    state_store.loads.record_loaded([batch("b1")])
    again = reopen_store(state_store)
    try:
        assert [f.batch_id for f in again.loads.unloaded(["orders"])] == ["b2"]
    finally:
        again.close()
