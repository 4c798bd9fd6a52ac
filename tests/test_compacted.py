"""The current rows of a table kept compacted (riverbed.transform.compacted): a read opens a
few files however many batches the table staged, and returns exactly what reading every staged
file returns, through kills, withdrawn batches and erasures."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from riverbed.config.loader import demo_config_text
from riverbed.config.models import RiverbedConfig
from riverbed.config.tables import TableConfig
from riverbed.lake.layout import batch_file_path
from riverbed.lake.local import LocalStorage
from riverbed.lake.parquet import read_table, write_table
from riverbed.lake.scrub import drop_compacted
from riverbed.state import LakeFile, SQLiteStore
from riverbed.transform import compacted
from riverbed.transform.bookmarks import Batch
from riverbed.transform.current import CurrentRows
from riverbed.transform.plan import read_current
from riverbed.transform.read import resolve_toast

TABLE = "customers"
TABLES = {
    TABLE: TableConfig.model_validate(
        {"kind": "dimension", "target": "dim_customer", "keys": ["id"], "tracked": ["email"]}
    )
}


class Lake:
    """A lake folder and its manifest, with staged batches added as a transform commits them."""

    def __init__(self, folder: Path):
        self.storage = LocalStorage(folder / "lake")
        self.manifest = SQLiteStore(folder / "state.db")
        self.batches = 0
        self.lsn = 0

    def stage(self, ids: list[int], ops: list[str] | None = None, lsn: int | None = None) -> str:
        """One staged batch: a version of each id (values name the batch), committed."""
        self.batches += 1
        first = self.lsn + 1 if lsn is None else lsn
        positions = list(range(first, first + len(ids)))
        self.lsn = max(self.lsn, positions[-1])
        rows = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "email": [f"{i}@batch{self.batches}" for i in ids],
                "_op": ops or ["U"] * len(ids),
                "_commit_ts": pa.array([p * 1000 for p in positions], pa.timestamp("us", "UTC")),
                "_lsn": pa.array(positions, pa.int64()),
                "_seq": pa.array([0] * len(ids), pa.int64()),
            }
        )
        path = batch_file_path("staged", TABLE, f"{positions[-1]:016X}-b{self.batches}", 0)
        size = write_table(self.storage, path, rows)
        self.manifest.lake.add(
            [
                LakeFile(
                    path=path,
                    stage="staged",
                    table=TABLE,
                    rows=len(ids),
                    bytes=size,
                    min_lsn=positions[0],
                    max_lsn=positions[-1],
                    schema_version=1,
                )
            ]
        )
        return path

    def commit(self, ids: list[int], ops: list[str] | None = None) -> str:
        """A batch staged and the compaction the transform runs after its commit."""
        path = self.stage(ids, ops)
        compacted.compact(self.storage, self.manifest, TABLE, ["id"])
        return path

    def current(self, restrict: list[int] | None = None) -> dict[int, str]:
        rows = CurrentRows(self.storage, self.manifest, TABLES).rows(
            TABLE,
            {"email"},
            restrict=[("id", pa.array(restrict, pa.int64()))] if restrict else None,
        )
        return dict(
            zip(rows.column("id").to_pylist(), rows.column("email").to_pylist(), strict=True)
        )

    def expected(self) -> dict[int, str]:
        """Every staged file read, the latest version of each key, deletes dropped."""
        files = self.manifest.lake.files("staged", TABLE)
        rows = pa.concat_tables([read_table(self.storage, f.path) for f in files])
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("_lsn", "ascending")]))
        found: dict[int, str] = {}
        for key, email, op in zip(
            *(rows.column(c).to_pylist() for c in ("id", "email", "_op")), strict=True
        ):
            if op == "D":
                found.pop(key, None)
            else:
                found[key] = email
        return found

    def read_paths(self) -> list[str]:
        return compacted.sources(self.storage, self.manifest, TABLE).paths


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path)


def test_a_read_opens_few_files_however_many_batches_were_staged(lake: Lake) -> None:
    for n in range(100):
        ops = ["D"] if n % 7 == 3 else None
        lake.commit([n % 13] if ops else [n % 13, 100 + n], ops)
    # 100 batches: one tier-2 file (64), four of tier 1 (32), four staged
    assert len(lake.read_paths()) == 9
    assert lake.current() == lake.expected()
    assert lake.current(restrict=[3, 5, 150, 999]) == {
        k: v for k, v in lake.expected().items() if k in {3, 5, 150}
    }


def test_a_delete_in_a_compacted_file_wins_over_an_older_batch_staged_later(lake: Lake) -> None:
    lake.commit([1, 2])
    for _ in range(compacted.FAN_IN - 1):
        lake.commit([1], ["D"])
    assert not any(p.startswith("staged/") for p in lake.read_paths())  # all compacted
    lake.stage([1], lsn=2)  # reprocessed: an insert older than the delete
    assert 1 not in lake.current()
    assert lake.current() == lake.expected()


def test_a_kill_between_a_merge_and_deleting_what_it_merged_reads_each_row_once(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(compacted.FAN_IN * compacted.FAN_IN - 1):
        lake.commit([n % 5, 1000 + n])
    tier1 = [p for p in lake.read_paths() if "/tier1-" in p]
    assert len(tier1) == compacted.FAN_IN - 1

    def killed(_storage: object, _path: str) -> None:
        raise SystemExit("kill -9")

    monkeypatch.setattr(compacted, "_delete", killed)
    with pytest.raises(SystemExit):
        lake.commit([3, 2000])  # the eighth tier-1 file, merged into tier 2, none deleted
    monkeypatch.undo()
    listed = lake.storage.list(compacted.folder(TABLE))
    assert len(listed) == compacted.FAN_IN + 1  # the merged file beside all it merged
    assert [p for p in lake.read_paths() if "/tier" in p] == [p for p in listed if "/tier2-" in p]
    assert lake.storage.list(compacted.folder(TABLE)) == [p for p in listed if "/tier2-" in p]
    assert lake.current() == lake.expected()


def test_a_withdrawn_batch_makes_the_file_covering_it_stale(lake: Lake) -> None:
    paths = [lake.commit([n, 50 + n]) for n in range(compacted.FAN_IN)]
    assert len(lake.read_paths()) == 1
    lake.manifest.lake.remove([paths[2]])  # run --reprocess withdrew it
    assert lake.read_paths() == [p for p in paths if p != paths[2]]
    assert lake.storage.list(compacted.folder(TABLE)) == []
    assert lake.current() == lake.expected()
    assert 2 not in lake.current()


def test_an_erasure_drops_the_compacted_files_and_reads_go_to_the_scrubbed_ones(lake: Lake) -> None:
    for n in range(compacted.FAN_IN):
        lake.commit([n])
    for n in range(compacted.FAN_IN):
        raw_file(lake, n, [1], "body", 10 + n)
    compacted.compact(lake.storage, lake.manifest, TABLE, ["id"], compacted.TOAST)
    assert drop_compacted(lake.storage, TABLE) == 2  # current rows and TOAST history
    assert lake.read_paths() == [f.path for f in lake.manifest.lake.files("staged", TABLE)]
    assert lake.current() == lake.expected()


def test_an_unreadable_compacted_file_is_dropped(lake: Lake) -> None:
    for n in range(compacted.FAN_IN):
        lake.commit([n])
    (only,) = lake.storage.list(compacted.folder(TABLE))
    lake.storage.write_atomic(only, b"not parquet")
    assert len(lake.read_paths()) == compacted.FAN_IN
    assert lake.current() == lake.expected()


def test_the_tables_compacted_are_those_whose_current_rows_rules_read() -> None:
    config = RiverbedConfig.model_validate(yaml.safe_load(demo_config_text()))
    # orders' references to customers, returns' SQL reading order_items by key
    assert read_current(config.tables) == {"customers", "order_items"}


# --- the TOAST history ------------------------------------------------------------------------


def raw_file(lake: Lake, n: int, ids: list[int], body: str | None, lsn: int) -> LakeFile:
    """A raw file of ``ids`` repriced at ``lsn``; ``body`` None: sent as unchanged TOAST."""
    size = len(ids)
    rows = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "price": pa.array([n] * size, pa.int64()),
            "body": pa.array([body] * size, pa.string()),
            "_op": ["L" if body is not None else "U"] * size,
            "_commit_ts": pa.array([lsn * 1000] * size, pa.timestamp("us", "UTC")),
            "_lsn": pa.array([lsn] * size, pa.int64()),
            "_seq": pa.array(list(range(size)), pa.int64()),
            "_xid": pa.array([lsn] * size, pa.int64()),
            "_toast_unchanged": pa.array(
                [None if body is not None else ["body"]] * size, pa.list_(pa.string())
            ),
        }
    )
    path = f"raw/{TABLE}/date=2026-01-01/hour=00/{lsn:016X}_{lsn:016X}_v1_{n}.parquet"
    file = LakeFile(
        path=path,
        stage="raw",
        table=TABLE,
        rows=size,
        bytes=write_table(lake.storage, path, rows),
        min_lsn=lsn,
        max_lsn=lsn,
        schema_version=1,
    )
    lake.manifest.lake.add([file])
    return file


def test_a_mark_is_resolved_from_the_compacted_history_in_a_few_files(lake: Lake) -> None:
    files = [raw_file(lake, 0, [1, 2, 3], "the long body", 10)]
    files += [raw_file(lake, n, [1, 2], None, 10 + 10 * n) for n in range(1, 30)]
    for _ in range(2):  # the second finds nothing due
        compacted.compact(lake.storage, lake.manifest, TABLE, ["id"], compacted.TOAST)
    found = compacted.sources(lake.storage, lake.manifest, TABLE, compacted.TOAST)
    assert len(found.paths) == 1  # a long history compacted at once
    last = raw_file(lake, 99, [2, 3], None, 1000)
    batch = Batch(TABLE, (last,))
    raw = read_table(lake.storage, last.path)
    resolved = resolve_toast(lake.storage, lake.manifest, batch, ["id"], raw)
    assert resolved.column("body").to_pylist() == ["the long body"] * 2
    assert resolved.column("_toast_unchanged").to_pylist() == [None, None]
    assert resolved.column("price").to_pylist() == [99, 99]


def test_the_compacted_history_never_covers_a_raw_file_left_pending(lake: Lake) -> None:
    files = [raw_file(lake, n, [1], "body" if n == 0 else None, 10 + n) for n in range(10)]
    left = {f.path for f in files[4:]}
    compacted.compact(lake.storage, lake.manifest, TABLE, ["id"], compacted.TOAST, leave=left)
    found = compacted.sources(lake.storage, lake.manifest, TABLE, compacted.TOAST)
    assert found.compacted == ()  # four consumed files: not yet eight
    left = {f.path for f in files[8:]}
    compacted.compact(lake.storage, lake.manifest, TABLE, ["id"], compacted.TOAST, leave=left)
    found = compacted.sources(lake.storage, lake.manifest, TABLE, compacted.TOAST)
    assert [c.covers for c in found.compacted] == [frozenset(f.path for f in files[:8])]
    assert {f.path for f in found.uncovered} == left


def test_a_big_merged_file_skips_the_tiers_of_small_ones(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compacted, "TIER_ROWS", 4)
    lake.commit(list(range(40)))  # a snapshot: 40 rows, beyond 4 x 8 (tier 2): tier 3
    for n in range(compacted.FAN_IN - 1):
        lake.commit([n])
    assert [c.tier for c in compacted.sources(lake.storage, lake.manifest, TABLE).compacted] == [3]
    for n in range(compacted.FAN_IN):
        lake.commit([100 + n])
    tiers = sorted(c.tier for c in compacted.sources(lake.storage, lake.manifest, TABLE).compacted)
    assert tiers == [2, 3]  # eight one-row batches: 8 rows, tier 2; the big one not merged again
    assert lake.current() == lake.expected()


def test_keys_holding_a_value_are_those_whose_current_version_holds_it(lake: Lake) -> None:
    for n in range(compacted.FAN_IN):
        lake.commit([n, 10 + n])  # emails "<id>@batch<n + 1>"
    lake.commit([3])  # key 3 gives up 3@batch4 in a staged file not yet compacted
    lake.commit([20])
    asked = ["3@batch4", "12@batch3", "20@batch10", "20@batch1", "nobody"]
    rows = CurrentRows(lake.storage, lake.manifest, TABLES).rows(
        TABLE, {"email"}, holding_values=[("email", pa.array(asked))]
    )
    found = dict(zip(rows.column("id").to_pylist(), rows.column("email").to_pylist(), strict=True))
    assert found == {k: v for k, v in lake.expected().items() if v in asked}
    assert found == {12: "12@batch3", 20: "20@batch10"}
