"""A writer gets its turn at a DuckDB warehouse that readers of another process open without
pause (the web app's live charts under many clients while `run --every` loads): it takes the
gate (riverbed.load.duckdb_gate), new readers wait, and it opens once the readers in finish;
they open again when it closes. Without the gate the writer waited out its wait and failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.warehouse import WarehouseBusy

READERS = """
import sys, threading, time
from pathlib import Path
from riverbed.load.duckdb_warehouse import DuckDBWarehouse

def read(until):
    while time.monotonic() < until:
        reader = DuckDBWarehouse(Path(sys.argv[1]), read_only=True, lock_wait=30)
        try:
            reader.query("select sum(a.n * b.n) as s from t a, t b where a.n < 3000")
        finally:
            reader.close()

until = time.monotonic() + float(sys.argv[2])
threads = [threading.Thread(target=read, args=(until,)) for _ in range(8)]
for thread in threads:
    thread.start()
print("reading", flush=True)
for thread in threads:
    thread.join()
print("done", flush=True)
"""

ONE_READER = """
import sys
from pathlib import Path
from riverbed.load.duckdb_warehouse import DuckDBWarehouse
from riverbed.load.warehouse import WarehouseBusy
try:
    DuckDBWarehouse(Path(sys.argv[1]), read_only=True, lock_wait=0.3).close()
    print("opened")
except WarehouseBusy:
    print("busy")
"""


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "wh.duckdb"
    db = duckdb.connect(str(path))
    db.execute("create table t as select range as n from range(10000)")
    db.close()
    return path


def _one_reader(path: Path) -> str:
    found = subprocess.run(
        [sys.executable, "-c", ONE_READER, str(path)], capture_output=True, text=True, timeout=60
    )
    return found.stdout.strip() + found.stderr


def test_a_writer_gets_in_between_readers_in_turn(warehouse: Path) -> None:
    readers = subprocess.Popen(
        [sys.executable, "-c", READERS, str(warehouse), "4"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert readers.stdout is not None and readers.stdout.readline() == "reading\n"
        # 8 threads in turn never all let go at once: without the gate this open failed
        writer = DuckDBWarehouse(warehouse, lock_wait=3)
        try:
            writer.execute("insert into t values (-1)")
            # while the writer holds its turn, a new reader waits, then is busy
            assert _one_reader(warehouse) == "busy"
        finally:
            writer.close()
        assert readers.stdout.readline() == "done\n"  # the readers went on after it
        assert readers.wait(timeout=60) == 0
    finally:
        readers.kill()
        readers.wait()
    assert _one_reader(warehouse) == "opened"


def test_a_gate_a_dead_writer_held_is_open(warehouse: Path) -> None:
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from riverbed.load.duckdb_warehouse import DuckDBWarehouse;"
            "w = DuckDBWarehouse(Path(sys.argv[1])); print('open', flush=True); time.sleep(60)",
            str(warehouse),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        with pytest.raises(WarehouseBusy):
            DuckDBWarehouse(warehouse, read_only=True, lock_wait=0.3)
    finally:
        writer.kill()  # as kill -9: its flock dies with it
        writer.wait()
    assert _one_reader(warehouse) == "opened"


def test_a_process_shares_its_turn_among_its_own_opens(warehouse: Path) -> None:
    first = DuckDBWarehouse(warehouse, lock_wait=1)
    second = DuckDBWarehouse(warehouse, lock_wait=1)  # not kept out by the first's turn
    first.close()
    assert _one_reader(warehouse) == "busy"  # the second still holds the turn
    second.close()
    assert _one_reader(warehouse) == "opened"
