"""`riverbed ddl` before the first capture (issue 17 item 1): the column types come from the
source's catalog, and the DDL is the one the lake gives once the tables are captured, for
every dialect and either warehouse engine. With nothing captured and the source out of reach,
one line says both and the fix."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conftest import Database, free_port, run_cli, write_config

# a clinic, not the shop: an enum, numerics with and without a scale, dates, timestamps with
# and without a time zone, texts of three kinds and arrays; wards stays empty, so after the
# capture its types come from its schema version rather than from a file
CLINIC = """
create schema clinic;
create type clinic.severity as enum ('low', 'medium', 'high');
create table clinic.patients (
    patient_id bigint primary key, name text not null, nickname varchar(40), born date,
    weight numeric(5, 1), allergies text[], risk clinic.severity, registered_at timestamp);
create table clinic.visits (
    visit_id int primary key, patient_id bigint not null references clinic.patients,
    seen_at timestamptz not null, day date, fee numeric(10, 2), raw_amount numeric,
    big numeric(30, 4), doses numeric(6, 2)[], codes int[], severity clinic.severity,
    notes text, code char(3), score real, ratio float8, small smallint, paid boolean,
    slot time, ref uuid, extra jsonb, photo bytea, stay interval);
create table clinic.wards (ward_id int primary key, opened date, beds smallint, name text);

insert into clinic.patients values
    (1, 'Ann', 'annie', '1980-02-03', 61.5, '{nuts,"pollen dust"}', 'low', '2026-01-02 03:04:05'),
    (2, 'Bo', null, null, null, null, null, null);
insert into clinic.visits values
    (10, 1, '2026-11-01 10:00+00', '2026-11-01', 120.50, 3.14159, 12345678901234567890.1234,
     '{1.25,2.50}', '{7,8}', 'high', 'first', 'AB', 1.5, 2.25, 3, true, '09:30',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1}', '\\x0102', '1 day'),
    (11, 2, '2026-11-02 11:00+00', null, null, null, null, null, null, null, null, null, null,
     null, null, null, null, null, null, null, null);
"""

TABLES = """
tables:
  patients:
    kind: dimension
    target: dim_patient
    keys: [patient_id]
    tracked: [name, weight, risk]
  wards:
    kind: dimension
    target: dim_ward
    keys: [ward_id]
    tracked: [beds]
  visits:
    kind: fact
    target: fact_visits
    keys: [visit_id]
"""

DIALECTS = ("duckdb", "postgres", "redshift")


def config_text(source: str, warehouse: str) -> str:
    return f"{source}  schema: clinic\nlake:\n  path: lake\nstate:\n  path: state.db\n{warehouse}{TABLES}"


def ddl(config: Path, *args: str) -> str:
    result = run_cli("ddl", *args, "-c", str(config))
    assert result.code == 0, result.text
    return result.out


def test_the_ddl_before_the_first_capture_is_the_ddl_after_it(
    database: Database, tmp_path: Path
) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute(CLINIC)
    source = f'source:\n  dsn: "{database.dsn}"\n  slot: c_{uuid.uuid4().hex[:8]}\n'
    duckdb = "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n"
    # the engine's DSN is never reached: ddl only prints
    postgres = f'warehouse:\n  engine: postgres\n  dsn: "{database.dsn}"\n'
    config = write_config(tmp_path, config_text(source, duckdb))

    before = {dialect: ddl(config, "--dialect", dialect) for dialect in DIALECTS}
    # the warehouse engine's own dialect when none is given
    assert ddl(config) == before["duckdb"]
    config.write_text(config_text(source, postgres))
    assert ddl(config) == before["postgres"]
    config.write_text(config_text(source, duckdb))  # the run below loads into DuckDB
    # the catalog's types, mapped as the lake maps them
    assert '"weight" DECIMAL(5, 1)' in before["duckdb"]
    assert '"big" DECIMAL(30, 4)' in before["duckdb"]
    assert '"raw_amount" TEXT' in before["duckdb"]  # numeric without a scale stays text
    assert '"seen_at" TIMESTAMPTZ' in before["duckdb"]
    assert '"registered_at" TIMESTAMP,' in before["duckdb"]
    assert '"codes" TEXT' in before["duckdb"] and '"risk" TEXT' in before["duckdb"]
    assert "fact_visits" in before["redshift"] and "ENCODE ZSTD" in before["redshift"]

    captured = run_cli("capture", "--once", "-q", "-c", str(config))
    assert captured.code == 0, captured.text
    after = {dialect: ddl(config, "--dialect", dialect) for dialect in DIALECTS}
    assert after == before
    # and once transformed (no transforms here: the staged files keep the raw types)
    ran = run_cli("run", "--once", "-c", str(config))
    assert ran.code == 0, ran.text
    assert {dialect: ddl(config, "--dialect", dialect) for dialect in DIALECTS} == before

    # every table captured: the lake answers alone, the source may be gone
    gone = f'source:\n  dsn: "postgresql://riverbed@127.0.0.1:{free_port()}/nowhere"\n'
    config.write_text(config_text(gone, postgres))
    assert ddl(config, "--dialect", "postgres") == before["postgres"]


@pytest.mark.parametrize("where", ["dsn", "embedded"])
def test_nothing_captured_and_the_source_out_of_reach_is_one_line(
    where: str, tmp_path: Path
) -> None:
    if where == "dsn":
        source = f'source:\n  dsn: "postgresql://riverbed@127.0.0.1:{free_port()}/nowhere"\n'
        fix = "check source.dsn"
    else:  # the embedded server, not started
        source = f"source:\n  embedded:\n    port: {free_port()}\n"
        fix = "riverbed source up"
    config = write_config(
        tmp_path, config_text(source, "warehouse:\n  engine: duckdb\n  path: wh.duckdb\n")
    )
    result = run_cli("ddl", "-c", str(config))
    assert result.code == 1, result.text
    assert "Traceback" not in result.text and not result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "nothing captured yet of patients, wards, visits" in lines[0]
    assert "cannot connect to" in lines[0] and fix in lines[0]


def test_a_table_the_source_does_not_have_is_named(database: Database, tmp_path: Path) -> None:
    with database.connect(autocommit=True) as conn:
        conn.execute(
            "create schema clinic; create table clinic.patients (patient_id int primary key, name text)"
        )
    config = write_config(
        tmp_path,
        config_text(
            f'source:\n  dsn: "{database.dsn}"\n', "warehouse:\n  engine: duckdb\n  path: w.db\n"
        ),
    )
    result = run_cli("ddl", "-c", str(config))
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    assert "wards, visits: no such table in schema clinic" in result.err
