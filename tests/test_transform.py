"""The transform stage end to end: the demo config over a captured shop with dirty rows.

One shop is seeded, captured, driven with dirty traffic and captured again per module; each test
works on its own copy of that project folder (lake + state store), so they can break things.
The quality oracle is plain Python over the raw lake, written from the workload's definition of
dirt, not from the rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import Database, run_cli
from riverbed.config import load_project
from riverbed.config.loader import demo_config_text
from riverbed.lake.lock import ProcessLock
from riverbed.lake.reader import read_changes
from riverbed.lake.storage import open_storage
from riverbed.load.warehouse import open_warehouse
from riverbed.shop import catalog
from riverbed.shop.workload import Workload, WorkloadSpec
from riverbed.source.embedded import EmbeddedServer
from riverbed.state import SQLiteStore
from riverbed.transform import bookmarks as bookmarks_module
from riverbed.transform.engine import TransformEngineError
from riverbed.transform.runner import run_transform

TABLES = ["customers", "sellers", "products", "orders", "order_items", "returns"]


def demo_project(folder: Path, dsn: str, **overrides: Any) -> Path:
    """The demo riverbed.yaml (its tables, rules and transforms), pointed at ``dsn``."""
    config = yaml.safe_load(demo_config_text())
    config["source"] = {"dsn": dsn}
    config["lake"] = {"path": "lake", "max_rows": 5000, "max_seconds": 1}
    config["state"] = {"path": "state.db"}
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "riverbed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def small_project(folder: Path, dsn: str, schema: str, rest: str) -> Path:
    """A riverbed.yaml for one test schema of ``dsn`` (its own slot), lake and state in
    ``folder``; ``rest`` is the YAML of its tables (and any other section)."""
    config = folder / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{dsn}"\n  schema: {schema}\n  slot: slot_{schema}\n'
        f"lake:\n  path: lake\nstate:\n  path: state.db\n{rest}"
    )
    return config


def transform_after(database: Database, config: Path, *statements: str) -> None:
    """Run ``statements`` on the source, each in its own transaction, then capture and
    transform what they changed."""
    with database.connect(autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    ran = run_cli("run", "--once", "--stage", "transform", "-q", "-c", str(config))
    assert ran.code == 0, ran.text


@pytest.fixture(scope="module")
def captured_shop(
    pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A project folder whose lake holds a seeded shop plus dirty live traffic; and the
    workload's own count of the dirty rows it wrote."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {name}")
    dsn = pg_server.dsn(name)
    folder = tmp_path_factory.mktemp("shop")
    config = demo_project(folder, dsn)
    try:
        seeded = run_cli("shop", "seed", "--customers", "400", "--orders", "4000", "-q",
                         "-c", str(config))  # fmt: skip
        assert seeded.code == 0, seeded.text
        assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
        spec = WorkloadSpec(rate=600, duration=6, dirty_ratio=0.08, seed=7, large_every=3600)
        with psycopg.connect(dsn, autocommit=True) as conn:
            stats = Workload(conn, spec).run(lambda: False)
        assert sum(stats.dirty.values()) > 20
        captured = run_cli("capture", "--once", "-q", "-c", str(config))
        assert captured.code == 0, captured.text
        # one PII key for every copy, so copies hash alike and can be compared
        (folder / ".riverbed" / "pii.key").write_text("test-key")
        yield folder, dict(stats.dirty)
    finally:
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"drop database {name} with (force)")


@pytest.fixture
def project(captured_shop: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the captured project; returns its riverbed.yaml."""
    source, _ = captured_shop
    target = tmp_path / "project"
    shutil.copytree(source, target)
    return target / "riverbed.yaml"


def staged(config: Path, table: str, stage: str = "staged") -> pa.Table:
    """Every visible file of ``stage`` for ``table``, in source order."""
    project = load_project(config)
    storage = open_storage(project.config.lake, project.root)
    manifest = SQLiteStore(project.path(project.config.state.path))
    try:
        parts = [
            pq.read_table(storage.open_input(f.path)) for f in manifest.lake.files(stage, table)
        ]
    finally:
        manifest.close()
    if not parts:
        return pa.table({})
    rows = pa.concat_tables(parts, promote_options="permissive")
    order = pc.sort_indices(rows, sort_keys=[("_lsn", "ascending"), ("_seq", "ascending")])
    return rows.take(order)


def raw(config: Path, table: str) -> list[dict[str, Any]]:
    project = load_project(config)
    manifest = SQLiteStore(project.path(project.config.state.path))
    try:
        return read_changes(
            open_storage(project.config.lake, project.root), manifest, table
        ).to_pylist()
    finally:
        manifest.close()


def positions(table: pa.Table) -> list[tuple[int, int]]:
    if table.num_rows == 0:
        return []
    return list(
        zip(table.column("_lsn").to_pylist(), table.column("_seq").to_pylist(), strict=True)
    )


def dirty_positions(config: Path) -> dict[str, set[tuple[int, int]]]:
    """Which raw versions are dirty, by the workload's definitions (not by the rules)."""
    countries = set(catalog.COUNTRIES)
    items = {r["order_item_id"]: r for r in raw(config, "order_items") if r["_op"] != "D"}
    now = datetime.now(UTC)
    checks = {
        "customers": lambda r: (
            r["email"] is None or (r["country"] or "").strip().upper() not in countries
        ),
        "orders": lambda r: r["ordered_at"] is not None and r["ordered_at"] > now,
        # a negative quantity, or the item of an order dated in the future (created with it)
        "order_items": lambda r: (
            (r["quantity"] is not None and r["quantity"] < 1)
            or (r["created_at"] is not None and r["created_at"] > now)
        ),
        "returns": lambda r: (
            r["refund_amount"] is not None
            and r["order_item_id"] in items
            and r["refund_amount"]
            > items[r["order_item_id"]]["quantity"] * items[r["order_item_id"]]["unit_price"]
        ),
        "sellers": lambda r: r["name"] is None,
        "products": lambda r: r["price"] is not None and r["price"] < 0,
    }
    return {
        table: {(r["_lsn"], r["_seq"]) for r in raw(config, table) if r["_op"] != "D" and check(r)}
        for table, check in checks.items()
    }


def test_quarantine_holds_exactly_the_dirty_rows_with_their_reasons(
    project: Path, captured_shop: tuple[Path, dict[str, Any]]
) -> None:
    result = run_cli("run", "--once", "--json", "-c", str(project))
    assert result.code == 0, result.text
    report = json.loads(result.out)
    expected = dirty_positions(project)
    _, injected = captured_shop
    for table in TABLES:
        bad = staged(project, table, "quarantine")
        assert set(positions(bad)) == expected[table], table
        good = staged(project, table)
        assert not set(positions(good)) & expected[table]
        raw_rows = [r for r in raw(project, table)]
        # nothing lost: every raw version is staged or quarantined, exactly once
        assert sorted(positions(good) + positions(bad)) == sorted(
            (r["_lsn"], r["_seq"]) for r in raw_rows
        ), table
        if bad.num_rows:
            assert all(bad.column("_rule").to_pylist()) and all(bad.column("_reason").to_pylist())
    assert report["tables"]["returns"]["rows_quarantined"] == injected.get("refund_above_price", 0)
    reasons = staged(project, "order_items", "quarantine").column("_reason").to_pylist()
    assert all("quantity" in r or "created_at" in r for r in reasons)
    # the transforms ran: derived amount, normalised country, hashed email
    items = staged(project, "order_items").slice(0, 50).to_pylist()
    assert all(i["amount"] == i["quantity"] * i["unit_price"] for i in items if i["_op"] != "D")
    customers = staged(project, "customers").to_pylist()
    assert all(c["country"] == c["country"].strip().upper() for c in customers if c["country"])
    assert all(len(c["email"]) == 64 for c in customers if c["email"])


def test_a_second_run_with_nothing_new_is_a_no_op(project: Path) -> None:
    assert run_cli("run", "--once", "-q", "-c", str(project)).code == 0
    before = {t: staged(project, t) for t in TABLES}
    again = run_cli("run", "--once", "--json", "-c", str(project))
    assert again.code == 0, again.text
    assert json.loads(again.out)["batches"] == 0
    assert all(staged(project, t).equals(before[t]) for t in TABLES)


def test_a_crash_between_output_and_bookmark_neither_skips_nor_doubles(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(project.parent, reference)
    assert run_cli("run", "--once", "-q", "-c", str(reference / "riverbed.yaml")).code == 0

    commit = bookmarks_module.Bookmarks.commit
    calls = {"n": 0}

    def crash_on_third(self: Any, outcome: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # its Parquet is written, its bookmark not yet committed
            raise KeyboardInterrupt("killed")
        commit(self, outcome)

    monkeypatch.setattr(bookmarks_module.Bookmarks, "commit", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_transform(load_project(project))
    monkeypatch.setattr(bookmarks_module.Bookmarks, "commit", commit)
    run_transform(load_project(project))
    for table in TABLES:
        for stage in ("staged", "quarantine"):
            mine, theirs = (
                staged(project, table, stage),
                staged(reference / "riverbed.yaml", table, stage),
            )
            assert mine.equals(theirs), (table, stage)
            assert len(set(positions(mine))) == mine.num_rows


def test_unchanged_toast_values_are_resolved_across_batches(
    database: Database, tmp_path: Path
) -> None:
    """An update that leaves a TOASTed value unchanged arrives without it; its previous version
    is in an earlier batch (one file per batch here), and the staged row carries the value."""
    body = "".join(f"{i:06d}" for i in range(5000))  # ~30 kB of text: TOASTed, not compressed away
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema d; create table d.docs (id int primary key, title text, body text)"
        )
        conn.execute("insert into d.docs values (1, 'one', %s), (2, 'two', %s)", (body, body[::-1]))
    tables = (
        "tables:\n  docs:\n    kind: dimension\n    target: dim_docs\n    keys: [id]\n"
        "    tracked: [title, body]\n"
    )
    config = small_project(tmp_path, database.dsn, "d", f"transform:\n  batch_rows: 1\n{tables}")
    steps = [
        "update d.docs set body = body || 'x' where id = 1",
        "update d.docs set title = 'one again' where id = 1",  # body unchanged: not sent
        "update d.docs set title = 'two again' where id = 2",  # its value is in the snapshot
    ]
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    for step in steps:
        with database.connect(autocommit=True) as conn:
            conn.execute(step)
        assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    assert any(r["_toast_unchanged"] for r in raw_marks(config, "docs"))
    result = run_transform(load_project(config))
    assert len(result.tables[0].batches) == 4
    rows = staged(config, "docs").to_pylist()
    assert [(r["id"], r["title"], r["body"]) for r in rows[-2:]] == [
        (1, "one again", body + "x"),
        (2, "two again", body[::-1]),
    ]
    assert all(r["_toast_unchanged"] is None for r in rows)


def raw_marks(config: Path, table: str) -> list[dict[str, Any]]:
    project = load_project(config)
    manifest = SQLiteStore(project.path(project.config.state.path))
    storage = open_storage(project.config.lake, project.root)
    try:
        return read_changes(storage, manifest, table, resolve_toast=False).to_pylist()
    finally:
        manifest.close()


def test_an_unreadable_raw_file_is_set_aside_and_the_rest_goes_on(project: Path) -> None:
    cfg = load_project(project)
    manifest = SQLiteStore(cfg.path(cfg.config.state.path))
    victim = manifest.lake.files("raw", "orders")[-1]
    manifest.close()
    path = project.parent / "lake" / victim.path
    path.write_bytes(b"PAR1 this is not parquet" + path.read_bytes()[100:200])
    result = run_cli("run", "--once", "--json", "-c", str(project))
    assert result.code == 0, result.text
    report = json.loads(result.out)
    assert [b["path"] for b in report["bad_files"]] == [victim.path]
    assert (project.parent / "lake" / report["bad_files"][0]["moved_to"]).exists()
    # the run succeeds without the file's changes: its log says so (a WARNING, which the
    # console shows without --json), not only status
    logged = [
        json.loads(line)
        for log in project.parent.rglob("riverbed.jsonl")
        for line in log.read_text().splitlines()
    ]
    set_aside = [e for e in logged if e.get("event") == "raw_file_set_aside"]
    assert [(e["level"], e["path"]) for e in set_aside] == [("WARNING", victim.path)]
    assert not path.exists()
    staged_rows = (
        staged(project, "orders").num_rows + staged(project, "orders", "quarantine").num_rows
    )
    assert staged_rows == sum(1 for _ in raw(project, "orders"))
    status = run_cli("status", "--json", "-c", str(project))
    assert victim.path in status.out


# `riverbed ARGS` that dies like kill -9 (no cleanup, no finally) right after one step of
# setting a bad raw file aside: "copied" (bad/ copy written), "recorded" (manifest updated),
# "released" (the original deleted)
KILLED_AT = """
import os, sys
from riverbed.lake.local import LocalStorage
from riverbed.transform.bookmarks import Bookmarks

def die_after(cls, name, when):
    original = getattr(cls, name)
    def step(self, *args):
        done = original(self, *args)
        if when(*args):
            os._exit(137)
        return done
    setattr(cls, name, step)

point = sys.argv.pop(1)
if point == "copied":
    die_after(LocalStorage, "write_atomic", lambda path, data: path.startswith("bad/"))
elif point == "recorded":
    die_after(Bookmarks, "quarantine_file", lambda *args: True)
else:
    die_after(LocalStorage, "delete", lambda path: path.startswith("raw/"))
from riverbed.cli import main
sys.argv[0] = "riverbed"
main()
"""


@pytest.mark.parametrize("point", ["copied", "recorded", "released", "unrecorded"])
def test_a_kill_while_setting_a_bad_file_aside_leaves_the_next_run_whole(
    project: Path, point: str
) -> None:
    """The file was deleted before the move was recorded: a kill between the two left the
    manifest naming a missing raw file, and every later run failed on it. "unrecorded" is the
    lake such a kill left (a copy in bad/, the original gone, the manifest unchanged)."""
    cfg = load_project(project)
    manifest = SQLiteStore(cfg.path(cfg.config.state.path))
    victim = manifest.lake.files("raw", "orders")[-1]
    manifest.close()
    path = project.parent / "lake" / victim.path
    path.write_bytes(b"PAR1 this is not parquet" + path.read_bytes()[100:200])
    if point == "unrecorded":
        copy = project.parent / "lake" / "bad" / victim.path
        copy.parent.mkdir(parents=True)
        path.rename(copy)
    else:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AT, point, "run", "--once", "-q", "-c", str(project)],
            env={**os.environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert killed.returncode == 137, killed.stderr

    result = run_cli("run", "--once", "--json", "-c", str(project))
    assert result.code == 0, result.text
    assert not path.exists()
    assert (project.parent / "lake" / "bad" / victim.path).exists()
    status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    assert [b["path"] for b in status["bad_files"]] == [victim.path]
    staged_rows = (
        staged(project, "orders").num_rows + staged(project, "orders", "quarantine").num_rows
    )
    assert staged_rows == sum(1 for _ in raw(project, "orders"))


def test_finishing_a_set_aside_keeps_a_raw_file_landed_again_under_its_name(
    tmp_path: Path,
) -> None:
    """A raw file set aside (copy in bad/, move recorded) and a new one landed since under the
    same path and listed in the manifest: finishing set-asides took the new file for the
    original a kill left behind, and deleted it unread."""
    from riverbed.lake.layout import bad_path, raw_file_path
    from riverbed.lake.local import LocalStorage
    from riverbed.state import LakeFile
    from riverbed.transform.write import finish_set_asides

    storage = LocalStorage(tmp_path / "lake")
    store = SQLiteStore(tmp_path / "state.db")
    try:
        path = raw_file_path("orders", 1_764_237_600 * 1_000_000, 100, 109, 1, 0)
        file = LakeFile(
            path=path,
            stage="raw",
            table="orders",
            rows=10,
            bytes=100,
            min_lsn=100,
            max_lsn=109,
            schema_version=1,
        )
        storage.write_atomic(path, b"not parquet")
        store.lake.add([file])
        storage.write_atomic(bad_path(path), b"not parquet")
        store.transform.set_aside(file, bad_path(path), "not a parquet file")
        storage.delete(path)
        storage.write_atomic(path, b"PAR1 the new file")  # landed again, and listed
        store.lake.add([file])

        finish_set_asides(storage, store, bookmarks_module.Bookmarks(store), "orders")
        assert storage.read(path) == b"PAR1 the new file"
        assert storage.exists(bad_path(path))
        # an original left behind by a kill after the move was recorded is still deleted
        store.lake.remove([path])
        finish_set_asides(storage, store, bookmarks_module.Bookmarks(store), "orders")
        assert not storage.exists(path)
    finally:
        store.close()


def test_transient_failures_are_retried_terminal_ones_fail_at_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riverbed.transform.duckdb_engine import DuckDBEngine

    real = DuckDBEngine.query
    failures = {"n": 0}

    def flaky(self: DuckDBEngine, statement: Any) -> pa.Table:
        if failures["n"] < 2:
            failures["n"] += 1
            raise TransformEngineError("duckdb: IO Error: file is locked", transient=True)
        return real(self, statement)

    monkeypatch.setattr(DuckDBEngine, "query", flaky)
    result = run_transform(load_project(project), tables=["sellers"])
    assert failures["n"] == 2 and result.tables[0].rows_in > 0

    config = yaml.safe_load(project.read_text())
    config["tables"]["orders"]["quality"].append({"type": "not_null", "column": "shipped_on"})
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    failed = run_cli("run", "--once", "-c", str(project))
    assert failed.code != 0
    assert "orders" in failed.err and "shipped_on" in failed.err and "Traceback" not in failed.err


def test_an_orchestrated_transform_leaves_transient_retries_to_the_retry_rules(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries of a transient failure happen at one layer: under `riverbed run` the
    orchestrator's Retry rules rerun the transform task, which does not also retry each step
    itself (the attempts would multiply); with no Retry rule for it, the transform does."""
    from riverbed.orchestrate.runner import run_pipeline
    from riverbed.transform.duckdb_engine import DuckDBEngine

    calls = {"n": 0}

    def broken(_self: DuckDBEngine, _statement: Any) -> pa.Table:
        calls["n"] += 1
        raise TransformEngineError("duckdb: IO Error: file is locked", transient=True)

    monkeypatch.setattr(DuckDBEngine, "query", broken)
    config = yaml.safe_load(project.read_text())
    config["transform"] = {"retries": 2}
    config["orchestration"] = {"retry": [{"errors": ["transient"], "max_attempts": 3}]}
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    report = run_pipeline(load_project(project), sleep=lambda _: None)
    assert (report.status, report.failed_state, report.error_class) == (
        "failed",
        "transform",
        "transient",
    )
    assert calls["n"] == 1 + 3  # the first attempt and the Retry rule's 3, no more

    calls["n"] = 0
    config["orchestration"] = {"retry": []}
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    report = run_pipeline(load_project(project), sleep=lambda _: None)
    assert report.status == "failed" and report.error_class == "transient"
    assert calls["n"] == 1 + 2  # no Retry rule: the transform's own transform.retries


def test_a_fail_rule_stops_the_batch_and_nothing_of_it_is_staged(project: Path) -> None:
    config = yaml.safe_load(project.read_text())
    config["tables"]["order_items"]["quality"] = [
        {"type": "range", "column": "quantity", "min": 1, "action": "fail"}
    ]
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_cli("run", "--once", "-c", str(project))
    assert result.code != 0
    assert "order_items" in result.err and "range(quantity)" in result.err
    assert staged(project, "order_items").num_rows == 0
    status = json.loads(run_cli("status", "--json", "-c", str(project)).out)
    items = [q for q in status["quality"] if q["table"] == "order_items"][0]
    assert items["status"] == "failed" and items["rules"][0]["failed"] > 0
    assert items["rules"][0]["samples"]


def test_batches_before_a_failing_one_stay_staged_and_the_rerun_stages_the_rest_once(
    project: Path, tmp_path: Path
) -> None:
    """Batch N's output is written while batch N+1 is checked: N+1 failing must neither lose
    N nor stage any of N+1, and the run after the fix must stage each row exactly once."""
    reference = tmp_path / "reference"
    shutil.copytree(project.parent, reference)
    assert run_cli("run", "--once", "--stage", "transform", "-q",
                   "-c", str(reference / "riverbed.yaml")).code == 0  # fmt: skip

    config = yaml.safe_load(project.read_text())
    config["transform"] = {"batch_rows": 2000}  # clean snapshot batches first, dirt later
    config["tables"]["order_items"]["quality"][0]["action"] = "fail"  # range(quantity)
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    failed = run_cli("run", "--once", "--stage", "transform", "--json", "-c", str(project))
    assert failed.code != 0 and "range(quantity)" in failed.err
    kept = staged(project, "order_items")
    everything = raw(project, "order_items")
    first_dirty = min((r["_lsn"], r["_seq"]) for r in everything if (r["quantity"] or 1) < 1)
    assert 0 < kept.num_rows < len(everything)
    assert max(positions(kept)) < first_dirty  # nothing of the failing batch or after it
    assert pc.min(kept.column("quantity")).as_py() >= 1

    config["tables"]["order_items"]["quality"][0]["action"] = "quarantine"
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    assert run_cli("run", "--once", "--stage", "transform", "-q", "-c", str(project)).code == 0
    for stage in ("staged", "quarantine"):
        mine = staged(project, "order_items", stage)
        assert mine.equals(staged(reference / "riverbed.yaml", "order_items", stage)), stage
        assert len(set(positions(mine))) == mine.num_rows


def test_a_run_shows_each_batch_as_it_is_staged(project: Path) -> None:
    """On a terminal, `riverbed run` keeps a line of stderr up to date with what it does; the
    JSON log keeps a line per staged batch, with its counts."""
    config = yaml.safe_load(project.read_text())
    config["transform"] = {"batch_rows": 2000}
    project.write_text(yaml.safe_dump(config, sort_keys=False))
    screen, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverbed", "run", "--once", "--stage", "transform",
         "-c", str(project)],
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
        env={**os.environ, "COLUMNS": "200", "TERM": "xterm"},
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    with contextlib.suppress(OSError):  # EIO: the command closed the terminal
        while chunk := os.read(screen, 65536):
            shown += chunk
    os.close(screen)
    assert proc.wait(timeout=300) == 0, shown.decode(errors="replace")
    assert re.search(r"order_items: batch \d+ of \d+ staged", shown.decode(errors="replace"))
    lines = (project.parent / ".riverbed" / "logs" / "riverbed.jsonl").read_text().splitlines()
    staged_events = [e for e in map(json.loads, lines) if e.get("event") == "batch_staged"]
    by_table: dict[str, int] = {}
    for event in staged_events:
        by_table[event["table"]] = by_table.get(event["table"], 0) + event["rows_in"]
    assert by_table["order_items"] == len(raw(project, "order_items"))
    assert len([e for e in staged_events if e["table"] == "order_items"]) > 1


def test_reprocess_rewinds_and_stages_the_same_rows_again(project: Path) -> None:
    assert run_cli("run", "--once", "-q", "-c", str(project)).code == 0
    before = staged(project, "orders")
    again = run_cli("run", "--reprocess", "orders", "--from", "0/0", "-c", str(project))
    assert again.code == 0, again.text
    assert "rewound orders" in again.out and "withdrawn" in again.out
    after = staged(project, "orders")
    assert after.equals(before)
    bad = run_cli("run", "--reprocess", "orders", "--from", "yesterday", "-c", str(project))
    assert bad.code != 0 and "--from" in bad.err
    # a dimension's versions are not rewritten: once staged again and loaded as nothing, while
    # the run said it loaded them
    sellers = staged(project, "sellers")
    dimension = run_cli("run", "--reprocess", "sellers", "--from", "0/0", "-c", str(project))
    assert dimension.code != 0 and "sellers is a dimension" in dimension.err, dimension.text
    assert "rewound" not in dimension.out and staged(project, "sellers").equals(sellers)
    # a start after every change rewinds nothing, and keeps what is staged
    for later in ("2099-01-01T00:00Z", "FFFFFFFF/FFFFFFFF"):
        nothing = run_cli("run", "--reprocess", "orders", "--from", later, "-c", str(project))
        assert nothing.code == 0, nothing.text
        assert "rewound orders: 0 staged batches" in nothing.out
    assert staged(project, "orders").equals(before)


def test_reprocess_while_a_run_is_active_is_refused_and_rewinds_nothing(project: Path) -> None:
    """The rewind once happened before the refusal: between the active run's transform and
    load, its facts were withdrawn and the run published an empty fact table."""
    assert run_cli("run", "--once", "-q", "-c", str(project)).code == 0
    before = staged(project, "order_items")
    home = load_project(project).home
    for held in ("run.lock", "load.lock"):  # a whole run, or `run --stage load`, in flight
        lock = ProcessLock(home / held, "a test run")
        try:
            refused = run_cli(
                "run", "--reprocess", "order_items", "--from", "0/0", "-c", str(project)
            )
        finally:
            lock.release()
        assert refused.code != 0 and "is running for this project" in refused.err, refused.text
        assert "rewound" not in refused.out and "Traceback" not in refused.text
        assert staged(project, "order_items").equals(before)


def test_schema_changes_are_read_across_files(database: Database, tmp_path: Path) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema s; create table s.people (id int primary key, name text, age int);"
            "insert into s.people values (1, 'ann', 30), (2, 'bob', 40)"
        )
    tables = (
        "tables:\n  people:\n    kind: dimension\n    target: dim_people\n    keys: [id]\n"
        "    tracked: [name]\n    quality:\n      - {type: not_null, column: name}\n"
    )
    config = small_project(tmp_path, database.dsn, "s", tables)
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    with database.connect(autocommit=True) as conn:
        conn.execute("alter table s.people add column city text")
        conn.execute("insert into s.people values (3, 'cy', 50, 'Oslo')")
        conn.execute("alter table s.people alter column age type bigint")
        conn.execute("insert into s.people values (4, null, 5000000000, 'Rome')")
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    result = run_cli("run", "--once", "--json", "-c", str(config))
    assert result.code == 0, result.text
    rows = {r["id"]: r for r in staged(config, "people").to_pylist()}
    assert rows[1]["city"] is None and rows[3]["city"] == "Oslo"
    assert rows[3]["age"] == 50
    bad = staged(config, "people", "quarantine").to_pylist()
    assert [r["id"] for r in bad] == [4] and bad[0]["age"] == 5_000_000_000


def test_a_reference_to_its_own_table_sees_what_earlier_runs_staged(
    database: Database, tmp_path: Path
) -> None:
    """A manager staged by an earlier run exists for the reference rule of a later batch;
    a manager nobody ever had does not."""
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema e; create table e.staff (id int primary key, name text, boss int);"
            "insert into e.staff values (1, 'ann', null)"
        )
    tables = (
        "tables:\n  staff:\n    kind: dimension\n    target: dim_staff\n    keys: [id]\n"
        "    tracked: [name, boss]\n    quality:\n"
        "      - {type: references, column: boss, reference: staff.id, action: quarantine}\n"
    )
    config = small_project(tmp_path, database.dsn, "e", tables)
    transform_after(database, config)
    transform_after(database, config, "insert into e.staff values (2, 'bo', 1), (3, 'cy', 99)")
    assert [r["id"] for r in staged(config, "staff").to_pylist()] == [1, 2]
    bad = staged(config, "staff", "quarantine").to_pylist()
    assert [r["id"] for r in bad] == [3] and "99" in bad[0]["_reason"]


def test_refunds_are_compared_with_the_item_value(project: Path) -> None:
    """The demo's cross-table rule reads order_items' current rows by name."""
    assert run_cli("run", "--once", "-q", "-c", str(project)).code == 0
    items = {r["order_item_id"]: r for r in staged(project, "order_items").to_pylist()}
    for row in staged(project, "returns").to_pylist():
        if row["refund_amount"] is not None and row["order_item_id"] in items:
            item = items[row["order_item_id"]]
            assert Decimal(row["refund_amount"]) <= item["quantity"] * item["unit_price"]


def test_duckdb_and_spark_give_identical_staged_output_and_quality_results(
    project: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    twin = tmp_path / "spark"
    shutil.copytree(project.parent, twin)
    on_duckdb = run_transform(load_project(project), engine="duckdb")
    on_spark = run_transform(load_project(twin / "riverbed.yaml"), engine="spark")
    assert on_duckdb.engine == "duckdb" and on_spark.engine == "spark"
    for table in TABLES:
        for stage in ("staged", "quarantine"):
            mine, theirs = (
                staged(project, table, stage),
                staged(twin / "riverbed.yaml", table, stage),
            )
            assert mine.schema.equals(theirs.schema), (table, stage, mine.schema, theirs.schema)
            assert mine.equals(theirs), (table, stage)
    duck = {t.table: t.batches for t in on_duckdb.tables}
    spark = {t.table: t.batches for t in on_spark.tables}
    assert duck == spark
    assert sum(t.rows_quarantined for t in on_spark.tables) > 0


def test_a_reference_from_a_transformed_column_reads_the_transformed_values(
    database: Database, tmp_path: Path
) -> None:
    """The referenced table's rows are read for the values the rule checks, the transformed
    ones, not the raw column's (here a NULL replaced from a legacy column)."""
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema t; create table t.clients (id int primary key, name text);"
            "create table t.sales (id int primary key, client int, legacy_client int);"
            "insert into t.clients values (1, 'ann'), (2, 'bo');"
            "insert into t.sales values (10, 1, null), (11, null, 2), (12, null, 3)"
        )
    tables = (
        "tables:\n  clients:\n    kind: dimension\n    target: dim_client\n    keys: [id]\n"
        "    tracked: [name]\n"
        "  sales:\n    kind: fact\n    target: fact_sale\n    keys: [id]\n"
        "    transforms:\n      client: COALESCE(client, legacy_client)\n    quality:\n"
        "      - {type: references, column: client, reference: clients.id, action: quarantine}\n"
    )
    config = small_project(tmp_path, database.dsn, "t", tables)
    transform_after(database, config)
    assert [r["id"] for r in staged(config, "sales").to_pylist()] == [10, 11]
    assert [r["id"] for r in staged(config, "sales", "quarantine").to_pylist()] == [12]


def test_unique_compares_with_the_values_keys_hold_now(database: Database, tmp_path: Path) -> None:
    """A value is taken only by a key whose current row holds it: one a key held before a
    later change is free again; a value a transform produces is compared as transformed."""
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema u; create table u.people (id int primary key, email text);"
            "create table u.members (id int primary key, email text);"
            "insert into u.people values (1, 'a@x'), (2, 'b@x');"
            "insert into u.members values (1, 'a@x')"
        )
    tables = (
        "tables:\n  people:\n    kind: dimension\n    target: dim_people\n    keys: [id]\n"
        "    tracked: [email]\n    quality:\n"
        "      - {type: unique, column: email, action: quarantine}\n"
        "  members:\n    kind: dimension\n    target: dim_member\n    keys: [id]\n"
        "    tracked: [email]\n    transforms:\n      email: lower(email)\n    quality:\n"
        "      - {type: unique, column: email, action: quarantine}\n"
    )
    config = small_project(tmp_path, database.dsn, "u", tables)
    transform_after(database, config)
    transform_after(database, config, "update u.people set email = 'z@x' where id = 1")
    transform_after(
        database,
        config,
        "insert into u.people values (3, 'a@x'), (4, 'b@x')",
        "insert into u.members values (2, 'A@X')",
    )
    assert [r["id"] for r in staged(config, "people").to_pylist()] == [1, 2, 1, 3]
    bad = staged(config, "people", "quarantine").to_pylist()
    assert [r["id"] for r in bad] == [4] and "already used" in bad[0]["_reason"]
    assert [r["id"] for r in staged(config, "members", "quarantine").to_pylist()] == [2]


def test_a_value_its_type_cannot_hold_is_quarantined_and_the_rest_stays_typed(
    database: Database, tmp_path: Path
) -> None:
    """'infinity' has no Arrow timestamp, so capture keeps that file's column as text. The
    pipeline once read the column as text everywhere after it, and every later run failed in
    the quality rules ("Cannot compare VARCHAR and TIMESTAMP"), forever: the file stays in the
    lake. Now the row is quarantined with the reason and the rest is staged typed."""
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema s; create table s.events (id int primary key, at timestamptz, d date);"
            "insert into s.events values (1, '2026-01-01 10:00+00', '2026-01-01'),"
            " (2, 'infinity', '2026-01-02'), (3, '2026-01-03 10:00+00', '-infinity')"
        )
    tables = (
        "tables:\n  events:\n    kind: fact\n    target: fact_events\n    keys: [id]\n"
        "    quality:\n      - {type: not_in_future, column: at}\n"
    )
    config = small_project(tmp_path, database.dsn, "s", tables)
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0  # the snapshot
    transform_after(  # and streamed rows
        database,
        config,
        "insert into s.events values (4, '-infinity', '2026-01-04')",
        "insert into s.events values (5, '2026-01-05 10:00+00', '2026-01-05')",
    )
    good = staged(config, "events")
    assert good.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert good.schema.field("d").type == pa.date32()
    assert sorted(good.column("id").to_pylist()) == [1, 5]
    bad = {r["id"]: r for r in staged(config, "events", "quarantine").to_pylist()}
    assert sorted(bad) == [2, 3, 4]
    assert "at" in bad[2]["_reason"] and "infinity" in bad[2]["_reason"]
    assert "d" in bad[3]["_reason"] and "-infinity" in bad[3]["_reason"]
    # the load goes on with typed columns, and later runs are not wedged
    ran = run_cli("run", "--once", "-q", "-c", str(config))
    assert ran.code == 0, ran.text
    # the catalog, on the warehouse itself: `riverbed query` refuses system catalogs
    loaded = load_project(config)
    warehouse = open_warehouse(loaded.config.warehouse, loaded.root, read_only=True)
    try:
        typed = warehouse.query(
            "select column_name, data_type from information_schema.columns"
            " where table_name = 'fact_events' and column_name in ('at', 'd') order by 1"
        ).column("data_type")
    finally:
        warehouse.close()
    assert typed.to_pylist() == ["TIMESTAMP WITH TIME ZONE", "DATE"]
    transform_after(database, config, "insert into s.events values (6, now(), current_date)")
    assert sorted(staged(config, "events").column("id").to_pylist()) == [1, 5, 6]


def test_a_pii_column_the_table_lacks_stops_the_run_before_anything_is_staged(
    database: Database, tmp_path: Path
) -> None:
    """A typo in pii: once skipped the column, and the real one's personal data went to the
    staged files and the warehouse in clear text."""
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema s; create table s.people (id int primary key, email text);"
            "insert into s.people values (1, 'ann@example.com')"
        )
    tables = (
        "tables:\n  people:\n    kind: dimension\n    target: dim_people\n    keys: [id]\n"
        "    tracked: [email]\n    pii: {emial: hash}\n"
    )
    config = small_project(tmp_path, database.dsn, "s", tables)
    assert run_cli("capture", "--once", "-q", "-c", str(config)).code == 0
    ran = run_cli("run", "--once", "-c", str(config))
    assert ran.code != 0
    assert "tables.people.pii.emial" in ran.err and "email" in ran.err, ran.err
    assert "Traceback" not in ran.text
    assert staged(config, "people").num_rows == 0
    # fixed, the same batch goes through, protected
    config.write_text(config.read_text().replace("emial", "email"))
    assert run_cli("run", "--once", "-q", "-c", str(config)).code == 0
    (email,) = staged(config, "people").column("email").to_pylist()
    assert email != "ann@example.com" and len(email) == 64


def test_a_duckdb_error_is_one_line() -> None:
    # DuckDB adds hint lines and an echo of the statement; a run's error, its log line and
    # `riverbed runs` print the message as it is, so it must be one line with the hint kept
    from sqlglot import parse_one

    from riverbed.transform.duckdb_engine import DuckDBEngine
    from riverbed.transform.engine import TransformEngineError

    engine = DuckDBEngine()
    engine.register("changes", pa.table({"quantity": [1]}))
    with pytest.raises(TransformEngineError) as caught:
        engine.register_view("transformed", parse_one("SELECT quantiy + 1 AS x FROM changes"))
    message = str(caught.value)
    assert "\n" not in message
    assert 'Referenced column "quantiy" not found' in message
    assert 'Candidate bindings: "quantity"' in message
