"""`riverbed source grants` (issue 18, item 9): the printed SQL makes a role that captures with
no more than REPLICATION and SELECT, through a publication its owner made, and a role without
those grants is refused with one line that names what it lacks."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import psycopg

from conftest import free_port, run_cli, write_config
from riverbed.config.loader import demo_config_text
from riverbed.source.embedded import _bin

SEED = ("--customers", "40", "--sellers", "5", "--products", "20", "--orders", "200")


def psql(home: Path, port: int, script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` with the wheel's psql as the embedded server's superuser."""
    return subprocess.run(
        [str(_bin("psql")), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script)]
        + [f"host=127.0.0.1 port={port} dbname=postgres user=postgres"],
        env={"PATH": os.environ["PATH"], "PGPASSFILE": str(home / "pg.pgpass"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_role(folder: Path, port: int, user: str, variable: str) -> Path:
    """A config beside the project's riverbed.yaml (so the same state store, and the same
    publication name) whose source is the embedded server as ``user``."""
    text = demo_config_text().replace("port: 54329", f"port: {port}")
    source = (
        "source:\n"
        f'  dsn: "host=127.0.0.1 port={port} dbname=postgres user={user}"\n'
        f"  password: {{env: {variable}}}\n"
    )
    text = text.replace("source:\n", source, 1)
    path = folder / f"{user}.yaml"
    path.write_text(text)
    return path


def test_a_role_made_from_the_printed_grants_captures_and_one_without_them_is_refused(
    tmp_path: Path,
) -> None:
    port = free_port()
    folder = tmp_path / "proj"
    config = write_config(folder, demo_config_text().replace("port: 54329", f"port: {port}"))
    home = folder / ".riverbed"
    password = secrets.token_urlsafe(16)
    try:
        assert run_cli("source", "up", "-c", str(config)).code == 0
        seeded = run_cli("shop", "seed", *SEED, "--months", "2", "-q", "-c", str(config))
        assert seeded.code == 0, seeded.text

        printed = run_cli("source", "grants", "-c", str(config))
        assert printed.code == 0, printed.text
        sql = printed.out
        assert "LOGIN REPLICATION PASSWORD :'capture_password'" in sql
        assert '"shop"."customers"' in sql and '"shop"."returns"' in sql
        statements = "\n".join(s for s in sql.splitlines() if not s.startswith("--")).upper()
        assert "SUPERUSER" not in statements and "OWNER" not in statements
        assert "ALL TABLES" not in statements and "CREATEROLE" not in statements
        script = tmp_path / "grants.sql"
        script.write_text(sql)

        # without the password's variable nothing is created: the statement fails first
        unset = psql(home, port, script, {})
        assert unset.returncode != 0
        with psycopg.connect(_superuser(home, port)) as conn:
            assert conn.execute(
                "select count(*) from pg_roles where rolname = 'riverbed_capture'"
            ).fetchone() == (0,)

        made = psql(home, port, script, {"RIVERBED_CAPTURE_PASSWORD": password})
        assert made.returncode == 0, made.stderr
        assert password not in made.stdout + made.stderr

        with psycopg.connect(_superuser(home, port)) as conn:
            role = conn.execute(
                "select rolsuper, rolreplication, rolcreatedb, rolcreaterole from pg_roles"
                " where rolname = 'riverbed_capture'"
            ).fetchone()
            owns = conn.execute(
                "select count(*) from pg_class where relowner = 'riverbed_capture'::regrole"
            ).fetchone()
        assert role == (False, True, False, False) and owns == (0,)

        capture = as_role(folder, port, "riverbed_capture", "CAPTURE_PW")
        env = {"CAPTURE_PW": password}
        done = run_cli("capture", "--once", "-q", "-c", str(capture), env=env)
        assert done.code == 0, done.text
        assert list((home / "lake" / "raw" / "customers").rglob("*.parquet"))
        # and the stream, as that role: a change after the snapshot arrives
        with psycopg.connect(_superuser(home, port)) as conn:
            conn.execute("update shop.customers set city = 'Granted' where customer_id = 1")
        again = run_cli("capture", "--once", "-c", str(capture), env=env)
        assert again.code == 0, again.text
        ran = run_cli("run", "--once", "-c", str(capture), env=env)
        assert ran.code == 0, ran.text
        cities = run_cli(
            "query",
            "--as",
            "admin",
            "--format",
            "csv",
            "-c",
            str(capture),
            "select city from dim_customer where customer_id = 1 and is_current_record",
        )
        assert "Granted" in cities.out, cities.text

        # a role that may log in and nothing more
        with psycopg.connect(_superuser(home, port), autocommit=True) as conn:
            conn.execute(f"create role bare login password '{password}'")
        bare_config = as_role(folder, port, "bare", "BARE_PW")
        bare = run_cli("capture", "--once", "-c", str(bare_config), env={"BARE_PW": password})
        assert bare.code != 0 and "Traceback" not in bare.text
        assert "the source role bare cannot capture" in bare.err
        assert "REPLICATION attribute" in bare.err and "USAGE on schema shop" in bare.err
        assert "riverbed source grants" in bare.err
        # given all but SELECT on one table: that table is named
        with psycopg.connect(_superuser(home, port), autocommit=True) as conn:
            conn.execute("alter role bare replication")
            conn.execute("grant usage on schema shop to bare")
            conn.execute("grant select on all tables in schema shop to bare")
            conn.execute("revoke select on shop.orders from bare")
        bare = run_cli("capture", "--once", "-c", str(bare_config), env={"BARE_PW": password})
        assert bare.code != 0 and "Traceback" not in bare.text
        assert "it lacks SELECT on shop.orders (for the snapshot);" in bare.err, bare.err
        # everything but the publication, in a project whose publication no owner made
        with psycopg.connect(_superuser(home, port), autocommit=True) as conn:
            conn.execute("grant select on shop.orders to bare")
        other = tmp_path / "other"
        other.mkdir()
        alone = run_cli(
            "capture",
            "--once",
            "-c",
            str(as_role(other, port, "bare", "BARE_PW")),
            env={"BARE_PW": password},
        )
        assert alone.code != 0 and "Traceback" not in alone.text
        assert "which does not exist, and creating it takes ownership" in alone.err, alone.err
    finally:
        run_cli("source", "down", "-c", str(config))


def _superuser(home: Path, port: int) -> str:
    return f"host=127.0.0.1 port={port} dbname=postgres user=postgres passfile={home / 'pg.pgpass'}"
