"""The replication slot invalidated by ``max_slot_wal_keep_size`` while capture was down,
under live traffic that keeps changing keys: when the supervisor starts capture again it
refuses, in one line naming the slot, the lost changes and `capture --resnapshot`, exits, and
records capture_slot_invalidated_total (the slot_invalidated alarm); restarted, it refuses
the same way each time. The operator's one step, by design (changes are gone from the source:
only a new snapshot can bring the lake back): stop the unit, `capture --once --resnapshot`,
start it. The pipeline then catches up by itself, the warehouse is exact, and the SCD2 history
of every key, those that changed in the gap included, is one unbroken line of versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline_support import cli

from chaos.conftest import MakeChaos
from chaos.frame import Chaos, admin_query, alarm_fired, assert_exact, fault_reported
from conftest import Database
from riverbed.config import load_project

REFUSAL = r"replication slot '\S+' was invalidated by the source \(wal_removed"


def invalidate_slot(chaos: Chaos, database: Database) -> None:
    """max_slot_wal_keep_size at its least, WAL written and switched past it, a checkpoint:
    the server removes the segments the stopped slot still needs, and invalidates it."""
    slot = load_project(chaos.config).config.source.slot
    with database.connect(autocommit=True) as conn:
        conn.execute("alter system set max_slot_wal_keep_size = '1MB'")
        conn.execute("select pg_reload_conf()")
        conn.execute("create table public.wal_filler (id int, pad text)")

        def lost() -> bool:
            conn.execute(
                "insert into public.wal_filler select g, repeat('x', 200)"
                " from generate_series(1, 20000) g"
            )
            conn.execute("select pg_switch_wal()")
            conn.execute("checkpoint")
            row = conn.execute(
                "select wal_status from pg_replication_slots where slot_name = %s", (slot,)
            ).fetchone()
            return row is not None and row[0] == "lost"

        chaos.wait("the slot invalidated", lost, 120)
        conn.execute("alter system reset max_slot_wal_keep_size")
        conn.execute("select pg_reload_conf()")


def check_scd2_history(config: Path) -> None:
    """Per dimension and key: versions in effective order, each expiring where the next takes
    effect (or before, after a delete), only the last one current, or none when a delete closed
    the last."""
    keys = {"dim_customer": "customer_id", "dim_seller": "seller_id", "dim_product": "product_id"}
    for target, key in keys.items():
        rows = admin_query(
            config,
            f"select {key} as k, effective_date, expiry_date, is_current_record, is_deleted"
            f" from {target}"
            f" order by {key}, effective_date",
        )
        by_key: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            by_key.setdefault(row["k"], []).append(row)
        broken = {}
        for k, versions in by_key.items():
            current = [v["is_current_record"] for v in versions]
            # a version ends where the next begins; one a delete closed, before (a gap)
            joined = all(
                a["expiry_date"] == b["effective_date"]
                or (a["is_deleted"] and a["expiry_date"] <= b["effective_date"])
                for a, b in zip(versions, versions[1:], strict=False)
            )
            closed = versions[-1]["is_deleted"] and not current[-1]
            only_last = current[:-1] == [False] * (len(versions) - 1)
            if not (joined and only_last and (current[-1] or closed)):
                broken[k] = versions
        assert not broken, f"{target}: broken histories: {dict(list(broken.items())[:3])}"


def test_a_slot_invalidated_while_capture_was_down_is_refused_then_resnapshotted(
    own_database: Database, make_chaos: MakeChaos
) -> None:
    chaos = make_chaos(own_database)
    chaos.alarm("slot_invalidated", "capture_slot_invalidated_total")
    chaos.start()
    chaos.flowing()

    with chaos.held("capture") as capture:
        capture.current.interrupt()  # capture down, while the workload changes keys
        invalidate_slot(chaos, own_database)
    chaos.wait("capture to refuse the slot", lambda: "was invalidated" in capture.stderr(), 120)
    alarm_fired(chaos, "slot_invalidated")

    # the operator's one step, as the refusal names it; the resnapshot takes the run lock, so
    # the continuous run is stopped first (its run in flight finishes) and started again after
    with chaos.held("capture") as capture, chaos.held("run") as run:
        chaos.wait("capture to exit", lambda: not capture.current.alive(), 60)
        assert run.current.interrupt(timeout=120) == 0
        cli(chaos.config, "capture", "--once", "--resnapshot", "-q")
    chaos.flowing()
    chaos.end_workload()

    chaos.catch_up()
    line = fault_reported(capture, REFUSAL)
    assert "--resnapshot" in line, line
    chaos.stop()
    chaos.no_manual_step()
    assert_exact(chaos.config, own_database)
    check_scd2_history(chaos.config)
