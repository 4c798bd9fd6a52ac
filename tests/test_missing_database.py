"""A database the server does not have: the fix is to create it or name another, not to start
the server (which answered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli, write_config
from riverbed.errors import SourceError
from riverbed.source.connection import Source
from riverbed.source.embedded import EmbeddedServer


def test_a_missing_source_database_says_create_it_not_start_it(pg_server: EmbeddedServer) -> None:
    source = Source(pg_server.dsn("nosuchdb"), None, pg_server)  # the embedded server, up
    with pytest.raises(SourceError) as caught:
        source.connect()
    message = str(caught.value)
    assert 'database "nosuchdb" does not exist' in message
    assert "create it" in message and "source.database" in message
    assert "riverbed source up" not in message
    assert not caught.value.transient


def test_a_missing_warehouse_database_is_one_line_naming_the_fix(
    pg_server: EmbeddedServer, tmp_path: Path
) -> None:
    dsn = pg_server.dsn("nosuchdb")
    path = write_config(tmp_path, f'warehouse: {{engine: postgres, dsn: "{dsn}"}}\n')
    result = run_cli("query", "--as", "admin", "select 1", "-c", str(path))
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    [line] = result.err.strip().splitlines()
    assert 'database "nosuchdb" does not exist' in line
    assert "create it" in line and "warehouse.dsn" in line
    assert "server is up" not in line
