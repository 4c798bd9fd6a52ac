"""The read paths' audit records go to one state store per process (riverbed.serve.
audit_store), shared by the web app's threads: every record is still appended, chained and
the reader's; a store whose file was replaced, or whose write failed, is opened again; the
app closes it at shutdown."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from riverbed.config import Project
from riverbed.config.loader import demo_config_text, load_project
from riverbed.govern.policy import GovernError
from riverbed.serve import audit_store
from riverbed.serve.app import create_app
from riverbed.serve.queries import _Audit
from riverbed.state import open_state


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "riverbed.yaml").write_text(demo_config_text())
    (tmp_path / ".riverbed").mkdir(mode=0o700)
    return load_project(tmp_path / "riverbed.yaml")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The stores audit_store opens."""
    found: list[object] = []

    def counted(project: Project) -> object:
        found.append(open_state(project))
        return found[-1]

    monkeypatch.setattr(audit_store, "open_state", counted)
    yield found
    audit_store.close_all()


def _record(project: Project, principal: str, n: int) -> None:
    audit = _Audit(project, principal, "web", f"select {n}")
    audit.record(["extract_customer_totals"], allowed=True, reason=None, rows=n)


def _records(project: Project) -> list:
    store = open_state(project)
    try:
        assert store.audit.verify().problem is None
        return store.audit.records()
    finally:
        store.close()


def test_threads_append_through_one_store_each_record_the_readers(
    project: Project, opened: list[object]
) -> None:
    threads = [threading.Thread(target=_record, args=(project, f"reader{t}", t)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _record(project, "admin", 100)
    assert len(opened) == 1
    records = _records(project)
    assert len(records) == 9
    assert {(r.principal, r.path, r.sql, r.tables) for r in records} == {
        *((f"reader{t}", "web", f"select {t}", ("extract_customer_totals",)) for t in range(8)),
        ("admin", "web", "select 100", ("extract_customer_totals",)),
    }


def test_a_replaced_file_or_a_failed_write_opens_the_store_again(
    project: Project, opened: list[object]
) -> None:
    _record(project, "admin", 1)
    state = project.path(project.config.state.path)
    for side in state.parent.glob(f"{state.name}*"):
        side.unlink()  # a fresh store in its place (a restore, a test's new project)
    _record(project, "admin", 2)
    assert len(opened) == 2
    assert [r.sql for r in _records(project)] == ["select 2"]
    opened[-1].close()  # type: ignore[attr-defined]  # its writes now fail
    with pytest.raises(GovernError, match="audit trail could not record"):
        _record(project, "admin", 3)
    _record(project, "admin", 4)
    assert len(opened) == 3
    assert [r.sql for r in _records(project)] == ["select 4", "select 2"]


def test_the_app_closes_its_store_at_shutdown(project: Project, opened: list[object]) -> None:
    with TestClient(create_app(project)):
        _record(project, "admin", 1)
        assert audit_store._HELD
    assert not audit_store._HELD
    with pytest.raises(Exception, match="closed"):
        opened[0].audit.records()  # type: ignore[attr-defined]
