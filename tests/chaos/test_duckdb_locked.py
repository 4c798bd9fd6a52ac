"""The DuckDB warehouse locked by another process (someone's `duckdb` shell, say) for longer
than a run's wait for it (LOCK_WAIT_SECONDS), under live traffic: the state that writes fails
with a line naming the file and the other process, is retried (the warning line of its failed
attempt; the state_retried alarm over state_retries), and the load goes through once the file
is free; the warehouse ends exact."""

from __future__ import annotations

import subprocess
import sys

import yaml

from chaos.conftest import MakeChaos
from chaos.frame import alarm_fired, assert_exact, fault_reported
from conftest import Database
from riverbed.load.duckdb_warehouse import LOCK_WAIT_SECONDS

HOLD_SECONDS = LOCK_WAIT_SECONDS + 5
# opens the file for writing as soon as no run has it, says so, holds it, and lets go
HOLDER = """
import sys, time, duckdb
while True:
    try:
        conn = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        time.sleep(0.05)
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


def test_the_duckdb_warehouse_locked_longer_than_the_wait(
    database: Database, make_chaos: MakeChaos
) -> None:
    chaos = make_chaos(database)
    chaos.alarm("state_retried", "state_retries", 120)
    warehouse = chaos.config.parent / yaml.safe_load(chaos.config.read_text())["warehouse"]["path"]
    chaos.start()
    chaos.flowing()

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse), str(HOLD_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        assert holder.wait(timeout=HOLD_SECONDS + 60) == 0
    finally:
        holder.kill()
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up()
    fault_reported(chaos.service("run"), r"\w+ failed: .*another process holds the file")
    alarm_fired(chaos, "state_retried")
    chaos.stop()
    chaos.no_manual_step()
    assert_exact(chaos.config, database)
