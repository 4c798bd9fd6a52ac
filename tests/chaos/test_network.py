"""The network to the source and to a PostgreSQL warehouse cut and restored, under live
traffic, through a TCP proxy of the test's (tests/chaos/proxy.py): first the warehouse's (runs
fail on it: the run_failed alarm, one line per failed run), then the source's (capture rides
it out: the capture_interrupted alarm), then both stalled, connections open but silent, for a
few seconds. Each cut lasts CUT_SECONDS, longer than a run's retries of a transient error
(three attempts a second or two apart), so a run does fail on it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chaos.conftest import MakeChaos
from chaos.frame import alarm_fired, assert_exact, fault_reported
from chaos.proxy import TcpProxy
from conftest import Database

CUT_SECONDS = 8
STALL_SECONDS = 4


@pytest.fixture
def proxies(database: Database) -> Iterator[dict[str, TcpProxy]]:
    """A proxy to the source's server and one to the warehouse's (the same server here, but
    a connection each way, cut apart)."""
    port = int(database.dsn.split("port=")[1].split()[0])
    both = {"source": TcpProxy(port), "warehouse": TcpProxy(port)}
    yield both
    for proxy in both.values():
        proxy.close()


def test_the_network_to_the_source_and_the_warehouse_cut_and_restored(
    database: Database,
    warehouse_database: Database,
    proxies: dict[str, TcpProxy],
    make_chaos: MakeChaos,
) -> None:
    source, warehouse = proxies["source"], proxies["warehouse"]
    chaos = make_chaos(
        Database(database.name, source.dsn(database.dsn)),
        Database(warehouse_database.name, warehouse.dsn(warehouse_database.dsn)),
    )
    chaos.database = database  # the test's own look at the source, never cut
    # a lighter workload: a PostgreSQL warehouse loads slower than DuckDB
    chaos.start(rate=60)

    for cut in ((warehouse,), (source,)):
        chaos.flowing()
        for proxy in cut:
            proxy.cut()
        time.sleep(CUT_SECONDS)
        for proxy in cut:
            proxy.restore()
    chaos.flowing()
    source.stall()
    warehouse.stall()
    time.sleep(STALL_SECONDS)
    source.restore()
    warehouse.restore()
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up()
    assert source.cuts and warehouse.cuts
    fault_reported(chaos.service("run"), r"run \S+ failed")
    fault_reported(chaos.service("capture"), r"capture interrupted: .*source")
    alarm_fired(chaos, "run_failed")
    alarm_fired(chaos, "capture_interrupted")
    chaos.stop()
    chaos.no_manual_step()
    # every process stopped: no session of theirs may be left behind the proxy, holding locks
    with warehouse_database.connect(autocommit=True) as conn:
        left = conn.execute(
            "select pid, state, wait_event, left(query, 120) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchall()
    assert not left, f"sessions left on the warehouse: {left}"
    # the test's own look at the warehouse goes around the proxy: the proxy's threads share
    # this process with it, and a libpq call that waits holding the GIL would stall them
    text = chaos.config.read_text()
    for proxy in proxies.values():
        text = text.replace(f"port={proxy.port}", f"port={proxy.target[1]}")
    chaos.config.write_text(text)
    assert_exact(chaos.config, database)
