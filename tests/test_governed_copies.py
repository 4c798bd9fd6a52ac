"""Governed copies per security context (riverbed.serve.copies): a principal's query reads its
context's copy only when exactly fresh, and gets the live answer row for row either way; a
load makes copies stale until the next publish catches them up (by the appended batches, or
a rebuild after a rewrite); a refresh killed half-way leaves the old copy or the new; the
copies' schema is neither listed nor readable. The erasure of personal values in copies is
tested by tests/test_forget.py, whose config keeps copies holding them in clear."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_govern_property import FILTERS, ROWS, TYPES, policies, queries

from conftest import write_config
from riverbed.config import load_project, parse_config
from riverbed.config.loader import Project
from riverbed.errors import ConfigError, RiverbedError
from riverbed.govern.policy import GovernError, Policy
from riverbed.load.versions import bump, ensure_versions
from riverbed.load.warehouse import open_warehouse
from riverbed.serve.copies import Refreshed, fresh_copies, refresh_copies
from riverbed.serve.queries import query_as, read_catalog

COLUMNS = ", ".join(f"{name} {kind}" for name, kind in TYPES.items())
TABLES = "tables:\n  t: {kind: fact, target: t, keys: [id]}\n"


def warehouse_file(folder: Path) -> None:
    """Table t with ROWS, as batch b1, and a batch_id column as facts have."""
    with duckdb.connect(str(folder / "wh.duckdb")) as db:
        db.execute(f"CREATE TABLE t ({COLUMNS}, batch_id VARCHAR)")
        source = pa.table({c: [r[c] for r in ROWS] for c in TYPES})  # noqa: F841 - by name
        db.execute("INSERT INTO t SELECT *, 'b1' FROM source")


def project_with(folder: Path, governance: str) -> Project:
    section = "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n"
    return load_project(write_config(folder, section + TABLES + governance))


def live(project: Project) -> Project:
    """The same project without copies: every query answers from the tables."""
    governance = project.config.governance.model_copy(update={"copies": []})
    config = project.config.model_copy(update={"governance": governance})
    return dataclasses.replace(project, config=config)


def answer(project: Project, principal: str, sql: str) -> list[str]:
    batches = list(query_as(project, principal, sql))
    table = pa.Table.from_batches(batches) if batches else None
    return sorted(map(repr, table.to_pylist())) if table is not None else []


def refresh(project: Project) -> Refreshed:
    warehouse = open_warehouse(project.config.warehouse, project.root)
    try:
        return refresh_copies(project, warehouse, read_catalog(warehouse))
    finally:
        warehouse.close()


def copies_used(project: Project, principal: str) -> dict[str, str]:
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        policy = Policy.from_config(project.config)
        catalog = read_catalog(warehouse)
        return fresh_copies(
            project, warehouse, policy, policy.principal(principal), catalog, ("t",)
        )
    finally:
        warehouse.close()


def write(project: Project, *statements: str, appended: list[str] | None = None) -> None:
    """What a load does: change t and bump its version, in one transaction."""
    warehouse = open_warehouse(project.config.warehouse, project.root)
    try:
        ensure_versions(warehouse)
        with warehouse.transaction():
            for statement in statements:
                warehouse.execute(statement)
            bump(warehouse, "t", appended=appended)
    finally:
        warehouse.close()


def governance(granted: list[str], masks: dict[str, str], row_filter: str | None) -> str:
    columns = ", ".join(granted)
    grant = f"{{tables: [t], columns: {{include: [{columns}]}}"
    if row_filter:
        grant += f', row_filter: "{row_filter}"'
    if masks:
        grant += ", masks: {" + ", ".join(f"{c}: '{m}'" for c, m in masks.items()) + "}"
    return (
        "governance:\n  copies: [t]\n  roles:\n"
        f"    r: {{grants: [{grant}}}]}}\n"
        "    admin: {grants: [{tables: ['*']}], unmasked: ['*']}\n"
        "  principals:\n"
        "    p: {roles: [r], attributes: {region: EU}}\n"
        "    q: {roles: [r], attributes: {region: US}}\n"
        "    admin: {roles: [admin]}\n"
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("copies")
    warehouse_file(path)
    return path


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_copy_answers_as_the_live_query_for_random_policies(
    folder: Path, data: st.DataObject
) -> None:
    granted, masks, filtered, _region = data.draw(policies())
    sql = data.draw(queries(granted))
    project = project_with(folder, governance(granted, masks, FILTERS[filtered][0]))
    refresh(project)
    for principal in ("p", "q"):
        # t's batch_id is granted to no one: every context differs from the plain table
        assert copies_used(project, principal)
        assert answer(project, principal, sql) == answer(live(project), principal, sql), (
            sql,
            masks,
            filtered,
        )
    # admin reads the plain table: no copy
    assert copies_used(project, "admin") == {}


EU_MASKED = governance(["id", "name", "email", "region", "amount"], {"email": "hash"}, None)
EU_ONLY = (
    "governance:\n  copies: [t]\n  roles:\n"
    "    eu: {grants: [{tables: [t], row_filter: 'region = principal.region',"
    " masks: {email: hash, name: redact}}]}\n"
    "  principals:\n    p: {roles: [eu], attributes: {region: EU}}\n"
    "    q: {roles: [eu], attributes: {region: US}}\n"
)
QUERIES = [
    "SELECT * FROM t",
    "SELECT region, count(*) AS n, sum(amount) AS s FROM t GROUP BY region",
    "SELECT email, count(*) AS n FROM t GROUP BY email",
]


def same_answers(project: Project) -> None:
    for principal in ("p", "q"):
        for sql in QUERIES:
            assert answer(project, principal, sql) == answer(live(project), principal, sql), sql


def test_a_load_makes_the_copy_stale_until_the_next_refresh(tmp_path: Path) -> None:
    warehouse_file(tmp_path)
    project = project_with(tmp_path, EU_ONLY)
    assert refresh(project).as_dict() == {"built": 2, "appended": 0, "fresh": 0, "dropped": 0}
    assert copies_used(project, "p") and copies_used(project, "q")
    same_answers(project)
    assert refresh(project).fresh == 2  # nothing changed: nothing to do

    # an append: the copies are stale, the answers live (and hold the new rows)
    write(
        project,
        "INSERT INTO t VALUES (100, 'New', 'new@eu.example', 'EU', 5, DATE '2024-01-01', 'b2')",
        appended=["b2"],
    )
    assert copies_used(project, "p") == {}
    assert "'id': 100" in str(answer(project, "p", "SELECT id FROM t"))
    same_answers(project)
    # the refresh appends just the new batch's rows, and the copies are used again
    assert refresh(project).as_dict() == {"built": 0, "appended": 2, "fresh": 0, "dropped": 0}
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as db:
        # every copy has batch b2: its record is forgotten
        assert db.sql("SELECT count(*) FROM riverbed_load.riverbed_appended").fetchall() == [(0,)]
    assert copies_used(project, "p")
    same_answers(project)
    assert "'id': 100" in str(answer(project, "p", "SELECT id FROM t"))
    assert "'id': 100" not in str(answer(project, "q", "SELECT id FROM t"))

    # a rewrite (an update, an erasure, a delete): the copies are rebuilt
    write(project, "UPDATE t SET amount = 999 WHERE id = 1")
    assert copies_used(project, "p") == {}
    assert refresh(project).built == 2
    same_answers(project)
    assert "999" in str(answer(project, "q", "SELECT amount FROM t"))

    # a new policy: a new context built, the old ones dropped
    changed = project_with(tmp_path, EU_ONLY.replace("name: redact", "name: show_first_4"))
    assert refresh(changed).as_dict() == {"built": 2, "appended": 0, "fresh": 0, "dropped": 2}
    same_answers(changed)


# a refresh that dies like kill -9 right after the copy's rows were written, before its
# record (its transaction never commits)
KILLED = """
import os, sys
from riverbed.load.duckdb_warehouse import DuckDBWarehouse

original = DuckDBWarehouse.execute
def execute(self, statement):
    done = original(self, statement)
    text = str(statement)
    if text.startswith(("INSERT INTO riverbed_governed.\\"", "CREATE TABLE riverbed_governed.\\"")):
        os._exit(137)
    return done
DuckDBWarehouse.execute = execute

from riverbed.config import load_project
from riverbed.load.warehouse import open_warehouse
from riverbed.serve.copies import refresh_copies
from riverbed.serve.queries import read_catalog
project = load_project(__import__("pathlib").Path(sys.argv[1]))
warehouse = open_warehouse(project.config.warehouse, project.root)
refresh_copies(project, warehouse, read_catalog(warehouse))
"""


def killed_refresh(project: Project) -> None:
    assert project.config_path is not None
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(project.config_path)],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == 137, killed.stderr


def test_a_refresh_killed_half_way_leaves_the_old_copy_and_the_next_one_finishes(
    tmp_path: Path,
) -> None:
    warehouse_file(tmp_path)
    project = project_with(tmp_path, EU_ONLY)
    killed_refresh(project)  # the first build dies: no copy, live answers
    assert copies_used(project, "p") == {}
    same_answers(project)
    assert refresh(project).built == 2
    write(
        project,
        "INSERT INTO t VALUES (101, 'Late', 'late@eu.example', 'EU', 7, DATE '2024-02-01', 'b3')",
        appended=["b3"],
    )
    killed_refresh(project)  # the catch-up dies: the old copy, stale, is not read
    assert copies_used(project, "p") == {}
    same_answers(project)
    assert refresh(project).appended == 2  # and the next one appends the batch once
    assert copies_used(project, "p")
    same_answers(project)
    ids = answer(project, "p", "SELECT id FROM t WHERE id = 101")
    assert ids == ["{'id': 101}"]


def test_the_copies_schema_is_neither_listed_nor_readable(tmp_path: Path) -> None:
    warehouse_file(tmp_path)
    project = project_with(tmp_path, EU_ONLY)
    refresh(project)
    (context,) = [c.split('"')[1] for c in copies_used(project, "p").values()]
    listed = answer(project, "p", "SELECT DISTINCT table_name FROM riverbed_tables")
    assert listed == ["{'table_name': 't'}"]
    for sql in (
        "SELECT * FROM riverbed_governed.riverbed_copies",
        f'SELECT * FROM riverbed_governed."{context}"',
        f"SELECT * FROM {context}",
        "SELECT * FROM riverbed_load.riverbed_versions",
        "SELECT * FROM riverbed_load.riverbed_appended",
    ):
        with pytest.raises(GovernError, match="does not exist"):
            answer(project, "p", sql)


def test_copies_name_warehouse_tables() -> None:
    with pytest.raises(ConfigError) as wrong:
        parse_config(TABLES + "governance:\n  copies: [t, fact_*]\n", "test")
    assert (
        str(wrong.value)
        .strip()
        .splitlines()[-1]
        .endswith("governance.copies: 'fact_*' is not a warehouse table; tables: t")
    )
    assert parse_config(TABLES + "governance:\n  copies: ['*']\n", "test").governance.copies


def test_a_failed_refresh_fails_publish_with_one_line_and_queries_answer_live(
    tmp_path: Path,
) -> None:
    from riverbed.observe.notify import Dispatcher
    from riverbed.orchestrate.tasks import Tasks
    from riverbed.state import open_state

    warehouse_file(tmp_path)
    # q's mask fails on every name: its copy cannot be built (its live queries fail too)
    broken = EU_ONLY.replace(
        "    q: {roles: [eu], attributes: {region: US}}\n",
        "    q: {roles: [bad], attributes: {region: US}}\n",
    ).replace(
        "  principals:",
        "    bad: {grants: [{tables: [t], masks: {name: {sql: 'CAST({column} AS INTEGER)'}}}]}\n"
        "  principals:",
    )
    project = project_with(tmp_path, broken)
    store = open_state(project)
    try:
        tasks = Tasks(project, store, "run-1", Dispatcher({}))
        with pytest.raises(RiverbedError) as failed:
            tasks._refresh_copies()
    finally:
        store.close()
    message = str(failed.value)
    assert message.startswith("governed copies not refreshed: ") and "\n" not in message
    assert "answer from the tables themselves until the next publish" in message
    for sql in QUERIES:
        assert answer(project, "p", sql) == answer(live(project), "p", sql)
