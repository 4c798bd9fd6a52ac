"""`riverbed capture` setting up the source: which tables it may publish, whose slot and
publication it may touch, partitioned tables, generated columns, and the messages it gives when
the setup is wrong. Every case runs the command line as a user would; the source's own catalog
and SELECT are the oracle."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from capture_support import capture_config, lake_changes, normalise, normalise_row, replay
from capture_support import source_rows as select_rows

from conftest import CliResult, Database, run_cli


def config_for(
    tmp_path: Path, database: Database, schema: str, tables: dict[str, list[str]] | None = None
) -> Path:
    """A riverbed.yaml capturing ``schema``: the listed ``tables`` (name -> keys), else all."""
    block = None
    if tables is not None:
        block = "tables:\n" + "".join(
            f"  {name}:\n    kind: fact\n    target: fact_{name}\n    keys: [{', '.join(keys)}]\n"
            for name, keys in tables.items()
        )
    config = capture_config(tmp_path, database, tables=block)
    config.write_text(config.read_text().replace("source:\n", f"source:\n  schema: {schema}\n", 1))
    return config


def capture(config: Path, *args: str) -> dict[str, Any]:
    result = run_cli("capture", "--once", *args, "--json", "-c", str(config))
    assert result.code == 0, result.text
    assert "Traceback" not in result.text
    return json.loads(result.out)  # type: ignore[no-any-return]


def refused(config: Path, *args: str) -> str:
    """Run a capture that must be refused; its one line of error."""
    result = run_cli("capture", "--once", *args, "-c", str(config))
    return one_line_error(result)


def one_line_error(result: CliResult) -> str:
    assert result.code != 0, result.text
    assert "Traceback" not in result.text
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    return lines[0]


def oracle(database: Database) -> psycopg.Connection:
    return psycopg.connect(database.dsn, autocommit=True, options="-c TimeZone=UTC")


def assert_lake_equals_source(
    config: Path, conn: psycopg.Connection, schema: str, table: str, keys: list[str]
) -> None:
    lake = {
        tuple(normalise(k) for k in key): normalise_row(row)
        for key, row in replay(lake_changes(config, table), keys).items()
    }
    source = select_rows(conn, schema, table, keys)
    assert lake.keys() == source.keys(), f"{table}: keys differ"
    for key, row in source.items():
        assert {n: lake[key].get(n) for n in row} == row, f"{table} {key}"


def published(conn: psycopg.Connection, publication: str = "riverbed") -> set[str]:
    return {
        f"{r[0]}.{r[1]}"
        for r in conn.execute(
            "select schemaname, tablename from pg_publication_tables where pubname = %s",
            (publication,),
        )
    }


def lake_tables(tmp_path: Path) -> set[str]:
    raw = tmp_path / "lake" / "raw"
    return {p.name for p in raw.iterdir()} if raw.exists() else set()


def schema_versions(config: Path, table: str) -> list[int]:
    with sqlite3.connect(config.parent / "state.db") as db:
        return [
            r[0]
            for r in db.execute(
                "select version from table_schemas where table_name = ? order by 1", (table,)
            )
        ]


# --- 1. tables whose updates would fail once published -----------------------------------


def test_a_table_without_replica_identity_is_refused_before_it_is_published(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema ri;"
            " create table ri.keyed (id int primary key, v text);"
            " create table ri.bare (id int, v text);"
            " create table ri.full_row (id int, v text);"
            " alter table ri.full_row replica identity full;"
            " create table ri.by_index (id int not null, v text);"
            " create unique index by_index_id on ri.by_index (id);"
            " alter table ri.by_index replica identity using index by_index_id;"
            " insert into ri.keyed values (1, 'a'); insert into ri.bare values (1, 'a');"
            " insert into ri.full_row values (1, 'a'), (2, 'b');"
            " insert into ri.by_index values (1, 'a'), (2, 'b')"
        )
    whole = config_for(tmp_path, database, "ri")
    line = refused(whole)
    assert "ri.bare" in line and "primary key" in line
    assert "ALTER TABLE ri.bare REPLICA IDENTITY FULL" in line and "tables:" in line
    with oracle(database) as conn:
        assert not conn.execute("select 1 from pg_publication").fetchone()
        conn.execute("update ri.bare set v = 'the application still writes'")
        conn.execute("delete from ri.bare")
        # REPLICA IDENTITY NOTHING on a table with a key: as bad
        conn.execute("alter table ri.keyed replica identity nothing")
    listed = config_for(tmp_path, database, "ri", {"keyed": ["id"], "full_row": ["id"]})
    line = refused(listed)
    assert "ri.keyed" in line and "REPLICA IDENTITY FULL" in line and "tables.keyed" in line
    with oracle(database) as conn:
        conn.execute("update ri.keyed set v = 'b'")
        conn.execute(
            "create table ri.parted (id int, v text) partition by range (id);"
            " create table ri.parted_low partition of ri.parted for values from (0) to (10)"
        )
    # a partitioned table's rows live in its partitions, where PostgreSQL checks the identity
    line = refused(config_for(tmp_path, database, "ri", {"parted": ["id"]}))
    assert "ri.parted_low (a partition of ri.parted) has no primary key" in line

    # FULL and USING INDEX are identities: captured, updates and deletes streamed
    config = config_for(tmp_path, database, "ri", {"full_row": ["id"], "by_index": ["id"]})
    capture(config)
    with oracle(database) as conn:
        conn.execute(
            "update ri.full_row set v = 'b2' where id = 2; delete from ri.full_row where id = 1"
        )
        conn.execute(
            "update ri.by_index set v = 'b2' where id = 2; delete from ri.by_index where id = 1"
        )
    capture(config)
    with oracle(database) as conn:
        assert published(conn) == {"ri.full_row", "ri.by_index"}
        conn.execute("update ri.bare set v = 'x'")  # never published, never broken
        for table in ("full_row", "by_index"):
            assert_lake_equals_source(config, conn, "ri", table, ["id"])
    for table in ("full_row", "by_index"):
        assert schema_versions(config, table) == [1], table  # snapshot and stream agree on keys
    assert lake_tables(tmp_path) == {"full_row", "by_index"}


# --- 4. partitioned tables ----------------------------------------------------------------


def test_a_partitioned_table_is_captured_once_as_its_root(
    database: Database, tmp_path: Path
) -> None:
    keys = ["id", "region"]
    with oracle(database) as conn:
        conn.execute(
            "create schema pt;"
            " create table pt.parted (id int, region text, v text, primary key (id, region))"
            " partition by list (region);"
            " create table pt.parted_us partition of pt.parted for values in ('us');"
            " create table pt.parted_eu partition of pt.parted for values in ('eu');"
            " insert into pt.parted select g, case when g % 2 = 0 then 'us' else 'eu' end, 'v'"
            " from generate_series(1, 20) g"
        )
    config = config_for(tmp_path, database, "pt")
    first = capture(config)
    assert first["snapshot_rows"] == {"parted": 20}  # the root once, not its partitions too
    with oracle(database) as conn:
        conn.execute("insert into pt.parted values (100, 'us', 'new'), (101, 'eu', 'new')")
        conn.execute("update pt.parted set v = 'changed' where id in (2, 3)")
        conn.execute("delete from pt.parted where id in (4, 5)")
        conn.execute("update pt.parted set region = 'eu' where id = 6")  # moves partition
    again = run_cli("capture", "--once", "-c", str(config))
    assert again.code == 0, again.text
    assert "added to publication" not in again.text
    result = capture(config)
    assert result["snapshot_rows"] == {}
    with oracle(database) as conn:
        assert published(conn) == {"pt.parted"}
        assert_lake_equals_source(config, conn, "pt", "parted", keys)
    assert lake_tables(tmp_path) == {"parted"}
    assert schema_versions(config, "parted") == [1]
    both = config_for(tmp_path, database, "pt", {"parted": keys, "parted_us": keys})
    line = refused(both)
    assert "tables.parted_us" in line and "partition of pt.parted" in line


# --- 3. publications that are not only ours -----------------------------------------------


def test_a_publication_for_all_tables_is_refused_in_one_line(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema pa; create table pa.t (id int primary key); insert into pa.t values (1);"
            " create publication riverbed for all tables"
        )
    line = refused(config_for(tmp_path, database, "pa"))
    assert "riverbed" in line and "FOR ALL TABLES" in line and "source.publication" in line
    with oracle(database) as conn:
        assert conn.execute("select puballtables from pg_publication").fetchall() == [(True,)]
        assert not conn.execute(
            "select 1 from pg_replication_slots where database = current_database()"
        ).fetchone()
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def test_an_existing_publication_keeps_its_other_tables_and_they_stay_out_of_the_lake(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema other; create table other.keep (id int primary key);"
            " create schema pb; create table pb.t (id int primary key, v text);"
            " create table pb.extra (id int primary key);"
            " insert into pb.t values (1, 'a');"
            # another consumer's publication, on the name capture uses, with the options
            # capture needs (else it is refused: test_a_shared_publication_...)
            " create publication riverbed for table other.keep, pb.extra"
            " with (publish_via_partition_root = true, publish_generated_columns = stored)"
        )
    config = config_for(tmp_path, database, "pb", {"t": ["id"]})
    capture(config)
    with oracle(database) as conn:
        assert published(conn) == {"other.keep", "pb.extra", "pb.t"}
        conn.execute("insert into other.keep values (1); insert into pb.extra values (1)")
        conn.execute("update pb.t set v = 'b'; insert into pb.t values (2, 'c')")
        conn.execute("update other.keep set id = 2; delete from pb.extra")
    assert capture(config)["rows_by_table"] == {"t": 2}
    with oracle(database) as conn:
        assert published(conn) == {"other.keep", "pb.extra", "pb.t"}
        assert_lake_equals_source(config, conn, "pb", "t", ["id"])
    assert lake_tables(tmp_path) == {"t"}


def on_publication(config: Path, publication: str) -> Path:
    """``config`` with source.publication set to ``publication``."""
    text = config.read_text().replace("publication: riverbed", f"publication: {publication}")
    config.write_text(text)
    return config


def test_a_publication_with_a_column_list_or_row_filter_on_a_captured_table_is_refused(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema lab;"
            " create table lab.acct (id int primary key, name text, code text, note text);"
            " insert into lab.acct select g, 'n', 'c', 'x' from generate_series(1, 100) g;"
            " create publication pubc for table lab.acct (id, name, code) where (id < 50);"
            " create publication pubr for table lab.acct where (id < 50);"
            " create publication pubk for table lab.acct (id, name, code);"
            " create publication pubs for tables in schema lab"
        )
    for publication, what in (
        ("pubc", "a column list and a row filter"),
        ("pubr", "a row filter"),
        ("pubk", "a column list"),
    ):
        line = refused(on_publication(config_for(tmp_path, database, "lab"), publication))
        assert f"'{publication}'" in line and "lab.acct" in line and what in line, line
        assert "source.publication" in line and "name of its own" in line
    with oracle(database) as conn:
        # nothing on the source changed: filters and options as they were, no slot
        assert conn.execute(
            "select p.pubname, r.prattrs is not null, r.prqual is not null, p.pubviaroot"
            " from pg_publication p join pg_publication_rel r on r.prpubid = p.oid order by 1"
        ).fetchall() == [
            ("pubc", True, True, False),
            ("pubk", True, False, False),
            ("pubr", False, True, False),
        ]
        assert not conn.execute(
            "select 1 from pg_replication_slots where database = current_database()"
        ).fetchone()
    assert not list((tmp_path / "lake").rglob("*.parquet"))

    # FOR TABLES IN SCHEMA has neither: every column and every row arrives
    config = on_publication(config_for(tmp_path, database, "lab"), "pubs")
    assert capture(config)["snapshot_rows"] == {"acct": 100}
    with oracle(database) as conn:
        conn.execute("update lab.acct set note = 'y', code = 'd' where id in (10, 60)")
    assert capture(config)["rows_by_table"] == {"acct": 2}
    with oracle(database) as conn:
        assert_lake_equals_source(config, conn, "lab", "acct", ["id"])


def test_a_shared_publication_without_the_options_capture_needs_is_refused_unchanged(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create table public.other (id int primary key);"
            " create schema lab; create table lab.acct (id int primary key, v text);"
            " create table lab.ev (id int primary key, v text) partition by range (id);"
            " create table lab.ev_old partition of lab.ev for values from (0) to (100);"
            " create table lab.ev_new partition of lab.ev for values from (100) to (1000);"
            " insert into lab.ev select g, 'a' from generate_series(1, 150) g;"
            " insert into lab.acct values (1, 'a');"
            " create publication pubz for table public.other, lab.ev_old"
            " with (publish_via_partition_root = false);"
            " create publication pubp for table lab.ev_old;"
            " create publication pubn for table lab.ev, lab.acct;"
            " create publication pubq for tables in schema lab;"
            " create publication pubw for tables in schema lab;"
            " create publication pubo for table lab.ev"
        )
    only_ev = {"ev": ["id"]}
    for publication, tables, other in (
        ("pubz", None, "public.other"),  # another schema
        ("pubp", None, "lab.ev_old"),  # a partition listed as itself, not through its root
        ("pubn", only_ev, "lab.acct"),  # a table left out of tables:
        ("pubq", only_ev, "lab.acct"),  # a schema with a table left out of tables:
    ):
        config = on_publication(config_for(tmp_path, database, "lab", tables), publication)
        line = refused(config)
        assert f"'{publication}'" in line and other in line and "shared" in line, line
        assert "source.publication" in line and "name of its own" in line
    with oracle(database) as conn:
        # nothing on the source changed: options and tables as they were, no slot
        assert conn.execute(
            "select pubname, pubviaroot, pubgencols from pg_publication order by 1"
        ).fetchall() == [
            (name, False, "n") for name in ("pubn", "pubo", "pubp", "pubq", "pubw")
        ] + [("pubz", False, "n")]
        assert published(conn, "pubz") == {"public.other", "lab.ev_old"}
        assert published(conn, "pubn") == {"lab.acct", "lab.ev_new", "lab.ev_old"}
        assert not conn.execute(
            "select 1 from pg_replication_slots where database = current_database()"
        ).fetchone()
    assert not list((tmp_path / "lake").rglob("*.parquet"))

    # every table it publishes is captured (the partitions through their root): capture's
    # own, as an earlier release left it, so capture sets the options
    config = on_publication(config_for(tmp_path, database, "lab"), "pubw")
    assert capture(config)["snapshot_rows"] == {"acct": 1, "ev": 150}
    own = on_publication(config_for(tmp_path / "own", database, "lab", only_ev), "pubo")
    own.write_text(own.read_text().replace("slot: riverbed", "slot: own"))
    assert capture(own)["snapshot_rows"] == {"ev": 150}
    with oracle(database) as conn:
        conn.execute("update lab.ev set v = 'b' where id in (5, 120)")
    assert capture(config)["rows_by_table"] == {"ev": 2}
    assert capture(own)["rows_by_table"] == {"ev": 2}
    with oracle(database) as conn:
        assert conn.execute(
            "select pubname, pubviaroot, pubgencols from pg_publication"
            " where pubname in ('pubo', 'pubw') order by 1"
        ).fetchall() == [("pubo", True, "s"), ("pubw", True, "s")]
        assert_lake_equals_source(config, conn, "lab", "ev", ["id"])
        assert_lake_equals_source(own, conn, "lab", "ev", ["id"])


# --- 5. generated columns -----------------------------------------------------------------


def test_generated_columns_are_streamed_with_their_value(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema gen; create table gen.line (id int primary key, price int, qty int,"
            " total int generated always as (price * qty) stored);"
            " insert into gen.line (id, price, qty) values (1, 2, 3);"
            # made by an earlier release, without the options: capture sets them
            " create publication riverbed for table gen.line"
        )
    config = config_for(tmp_path, database, "gen")
    capture(config)
    with oracle(database) as conn:
        conn.execute("insert into gen.line (id, price, qty) values (2, 5, 7)")
        conn.execute("update gen.line set qty = 10 where id = 1")
    capture(config)
    streamed = [(c["_op"], c["id"], c["total"]) for c in lake_changes(config, "line") if c["_xid"]]
    assert streamed == [("I", 2, 35), ("U", 1, 20)]
    assert schema_versions(config, "line") == [1]
    with oracle(database) as conn:
        assert conn.execute("select pubviaroot, pubgencols from pg_publication").fetchall() == [
            (True, "s")
        ]
    with oracle(database) as conn:
        assert_lake_equals_source(config, conn, "gen", "line", ["id"])


def test_virtual_generated_columns_are_left_out_of_snapshot_and_stream_alike(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema virt; create table virt.t (id int primary key, a int,"
            " v int generated always as (a * 2) virtual);"
            " insert into virt.t (id, a) values (1, 1), (2, 2)"
        )
    config = config_for(tmp_path, database, "virt")
    assert capture(config)["snapshot_rows"] == {"t": 2}
    with oracle(database) as conn:
        conn.execute("update virt.t set a = 10 where id = 1")
    assert capture(config)["rows_by_table"] == {"t": 1}
    changes = lake_changes(config, "t")
    assert all("v" not in c for c in changes)
    assert schema_versions(config, "t") == [1]  # snapshot and stream carry the same columns
    with oracle(database) as conn:
        source = {
            key: {n: value for n, value in row.items() if n != "v"}
            for key, row in select_rows(conn, "virt", "t", ["id"]).items()
        }
    lake = {
        tuple(normalise(k) for k in key): normalise_row(row)
        for key, row in replay(changes, ["id"]).items()
    }
    assert lake == source


# --- 2. a slot this project did not create --------------------------------------------------


def test_a_slot_this_project_did_not_create_is_left_alone(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema sl; create table sl.t (id int primary key, v text);"
            " insert into sl.t values (1, 'a'), (2, 'b')"
        )
        # another tool's slot, on the name capture would use
        conn.execute("select pg_create_logical_replication_slot('riverbed', 'pgoutput')")
    config = config_for(tmp_path, database, "sl")
    line = refused(config)
    assert "'riverbed'" in line and "source.slot" in line and "--resnapshot" in line
    with oracle(database) as conn:
        assert conn.execute(
            "select slot_name from pg_replication_slots where database = current_database()"
        ).fetchall() == [("riverbed",)]
        assert not conn.execute("select 1 from pg_publication").fetchone()
    # --resnapshot alone leaves it alone too: it may be another project's
    line = refused(config, "--resnapshot")
    assert "'riverbed'" in line and "source.slot" in line and "--force" in line
    with oracle(database) as conn:
        assert conn.execute(
            "select slot_name from pg_replication_slots where database = current_database()"
        ).fetchall() == [("riverbed",)]
    assert "--resnapshot" in refused(config, "--force")  # --force alone drops nothing
    # dropping it is the user's explicit choice
    assert capture(config, "--resnapshot", "--force")["snapshot_rows"] == {"t": 2}
    with oracle(database) as conn:
        assert_lake_equals_source(config, conn, "sl", "t", ["id"])


def slot_position(conn: psycopg.Connection, slot: str) -> str | None:
    row = conn.execute(
        "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = %s", (slot,)
    ).fetchone()
    return None if row is None else str(row[0])


def test_a_slot_replaced_by_another_project_stops_capture_naming_the_gap(
    database: Database, tmp_path: Path
) -> None:
    """Two project folders on one source with one slot name (a copied riverbed.yaml): the
    second must not silently take the first one's slot, and once it does (--force), the
    first one's capture must say that changes are lost instead of reporting a complete lake."""
    with oracle(database) as conn:
        conn.execute(
            "create schema two; create table two.customers (id int primary key, v text);"
            " insert into two.customers select g, 'a' from generate_series(1, 50) g"
        )
    first = config_for(tmp_path / "first", database, "two")
    first.write_text(first.read_text().replace("slot: riverbed", "slot: shared"))
    second = tmp_path / "second" / "riverbed.yaml"
    second.parent.mkdir()
    second.write_text(first.read_text())  # lake and state are relative: the second folder's own
    position = capture(first)["position"]
    with oracle(database) as conn:
        for i in range(1, 31):  # committed after the first project's last capture
            conn.execute("update two.customers set v = 'changed' where id = %s", (i,))
        at = slot_position(conn, "shared")

    line = refused(second)
    assert "'shared'" in line and "did not create" in line
    line = refused(second, "--resnapshot")
    assert "'shared'" in line and "--force" in line
    with oracle(database) as conn:
        assert slot_position(conn, "shared") == at  # the first project's slot, untouched
    assert capture(second, "--resnapshot", "--force")["snapshot_rows"] == {"customers": 50}

    result = run_cli("capture", "--once", "-c", str(first))
    line = one_line_error(result)
    assert result.code == 1
    assert "'shared'" in line and "lost to this lake" in line and position in line
    assert "source.slot" in line and "--resnapshot" in line
    assert "complete" not in result.text
    with oracle(database) as conn:
        assert slot_position(conn, "shared") is not None  # still the second project's
    # status says so, and measures no lag through the other project's slot
    status = run_cli("status", "--json", "-c", str(first))
    assert status.code == 0, status.text
    cap = json.loads(status.out)["capture"]
    assert cap["lag_bytes"] is None and cap["lag_seconds"] is None, cap
    assert cap.get("slot_replaced"), cap
    shown = run_cli("status", "-c", str(first), env={"COLUMNS": "80"})
    said = " ".join(shown.out.split())
    assert "slot shared replaced" in said and "`riverbed capture --once` explains" in said, said
    # the fix it names: a slot of its own, and a fresh snapshot that replaces the whole lake
    own = first.read_text().replace("slot: shared", "slot: first_own")
    first.write_text(own.replace("publication: riverbed", "publication: first_own"))
    assert capture(first, "--resnapshot")["snapshot_rows"] == {"customers": 50}
    with oracle(database) as conn:
        assert_lake_equals_source(first, conn, "two", "customers", ["id"])
    assert len(lake_changes(first, "customers")) == 50  # the old slot's files are gone
    assert capture(second)["resumed_from"] is not None  # and the second goes on as it was


def without_names(config: Path) -> Path:
    """The config with no source.slot and source.publication: the project's own names."""
    text = config.read_text().replace("  slot: riverbed\n", "")
    config.write_text(text.replace("  publication: riverbed\n", ""))
    return config


def project_slots(conn: psycopg.Connection) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "select slot_name from pg_replication_slots where database = current_database()"
        )
    }


def test_two_project_folders_without_slot_names_get_slots_of_their_own(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema own; create table own.t (id int primary key, v text);"
            " insert into own.t values (1, 'a'), (2, 'b')"
        )
    configs = [without_names(config_for(tmp_path / n, database, "own")) for n in ("a", "b")]
    # a copy of the same riverbed.yaml, in another folder
    configs[1].write_text(configs[0].read_text())
    for config in configs:
        assert capture(config)["snapshot_rows"] == {"t": 2}
    slots = []
    for config in configs:
        status = run_cli("status", "--json", "-c", str(config))
        assert status.code == 0, status.text
        slots.append(json.loads(status.out)["capture"]["slot"])
    assert len(set(slots)) == 2 and all(s.startswith("riverbed_") for s in slots), slots
    with oracle(database) as conn:
        assert project_slots(conn) == set(slots)
        assert {r[0] for r in conn.execute("select pubname from pg_publication")} == set(slots)
        conn.execute("insert into own.t values (3, 'c'); update own.t set v = 'x' where id = 1")
    for config in configs:
        assert capture(config)["resumed_from"] is not None
        with oracle(database) as conn:
            assert_lake_equals_source(config, conn, "own", "t", ["id"])


def test_a_project_captured_through_slot_riverbed_keeps_it_without_slot_names(
    database: Database, tmp_path: Path
) -> None:
    """A project from before names of its own were chosen: its manifest knows slot riverbed,
    and capture goes on through it rather than snapshotting afresh through a new one."""
    with oracle(database) as conn:
        conn.execute(
            "create schema old; create table old.t (id int primary key, v text);"
            " insert into old.t values (1, 'a')"
        )
    config = config_for(tmp_path, database, "old")
    capture(config)  # source.slot and source.publication named riverbed, as they were
    without_names(config)
    with oracle(database) as conn:
        conn.execute("insert into old.t values (2, 'b')")
    again = run_cli("capture", "--once", "-c", str(config))
    assert again.code == 0, again.text
    assert "resuming slot riverbed" in again.text
    with oracle(database) as conn:
        assert project_slots(conn) == {"riverbed"}
        assert_lake_equals_source(config, conn, "old", "t", ["id"])
    assert len(lake_changes(config, "t")) == 2


def test_a_first_snapshot_cut_short_still_starts_over_by_itself(
    database: Database, tmp_path: Path
) -> None:
    with oracle(database) as conn:
        conn.execute(
            "create schema cut; create table cut.t (id int primary key, v text);"
            " insert into cut.t values (1, 'a'), (2, 'b')"
        )
    config = config_for(tmp_path, database, "cut")
    capture(config)
    # what a crash before the snapshot's last commit leaves: the slot, some tables, no position
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("delete from capture_position")
    with oracle(database) as conn:
        conn.execute("insert into cut.t values (3, 'c')")
    again = run_cli("capture", "--once", "-c", str(config))
    assert again.code == 0, again.text
    assert "dropping slot riverbed to start a fresh snapshot" in again.text
    assert "snapshot: 3 t" in again.text
    with oracle(database) as conn:
        assert_lake_equals_source(config, conn, "cut", "t", ["id"])
    assert sum(1 for c in lake_changes(config, "t")) == 3  # the first copy is gone


def test_a_first_snapshot_cut_short_whose_slot_was_dropped_starts_over_without_doubles(
    database: Database, tmp_path: Path
) -> None:
    """A first snapshot cut short (some tables copied, no position), and its slot dropped
    since (by an operator, or a server restored): the next capture starts afresh, and the rows
    copied the first time must not stay in the lake beside the new copy."""
    with oracle(database) as conn:
        conn.execute(
            "create schema cut; create table cut.t (id int primary key, v text);"
            " insert into cut.t values (1, 'a'), (2, 'b')"
        )
    config = config_for(tmp_path, database, "cut")
    capture(config)
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("delete from capture_position")
    with oracle(database) as conn:
        conn.execute("select pg_drop_replication_slot('riverbed')")
        conn.execute("insert into cut.t values (3, 'c')")
    assert capture(config)["snapshot_rows"] == {"t": 3}
    with oracle(database) as conn:
        assert_lake_equals_source(config, conn, "cut", "t", ["id"])
    assert sum(1 for c in lake_changes(config, "t")) == 3  # the first copy is gone


# --- 6. messages that name the fix --------------------------------------------------------


def test_a_lake_path_that_is_a_file_names_lake_path(database: Database, tmp_path: Path) -> None:
    with oracle(database) as conn:
        conn.execute("create schema lk; create table lk.t (id int primary key)")
    config = config_for(tmp_path, database, "lk")
    config.write_text(config.read_text().replace("path: lake\n", "path: lakefile\n"))
    (tmp_path / "lakefile").write_text("not a folder")
    line = refused(config)
    assert "lake.path" in line and "lakefile" in line and "folder" in line
    assert (tmp_path / "lakefile").read_text() == "not a folder"


def test_a_source_schema_that_does_not_exist_names_source_schema(
    database: Database, tmp_path: Path
) -> None:
    line = refused(config_for(tmp_path, database, "nosuch"))
    assert "source.schema" in line and "nosuch" in line and "does not exist" in line
    listed = config_for(tmp_path, database, "nosuch", {"t": ["id"]})
    assert "source.schema" in refused(listed)
