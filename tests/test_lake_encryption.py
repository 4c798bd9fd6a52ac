"""Encryption at rest of the lake (issue 18 item 7): with lake.encryption on, every raw, staged
and quarantined file is Parquet-encrypted (unreadable without the keyring, no personal value in
its bytes), the pipeline's result is the one it gives unencrypted, `riverbed keys rotate`
re-wraps the keys without rewriting a file (also after a kill -9 halfway), a missing or wrong
keyring is one line naming lake.encryption, `forget` still erases, DuckDB reads encrypted files
(Spark: tests/test_spark_engine.py), and an s3:// lake asks the object store for server-side encryption."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from pydantic import ValidationError
from test_lake_storage import KEY_VAR, SECRET, SECRET_VAR, s3_config, s3_endpoint  # noqa: F401

from conftest import Database, run_cli
from conftest import capture_and_run as pipeline
from conftest import run_sql as sql
from riverbed.config import parse_config
from riverbed.config.stores import LakeConfig
from riverbed.lake.crypto import keyring_at
from riverbed.lake.keyring import KeyringError
from riverbed.lake.parquet import read_table, write_table
from riverbed.lake.storage import LakeError, LakeStorage, open_storage

EMAIL = "wilma.secret@encrypted.test"
NAME = "Wilma Cipherfield"
PHONE = "+39 333 4455 667"
PERSONAL = (EMAIL, NAME, PHONE)

TABLES = """
tables:
  customers:
    kind: dimension
    target: dim_customer
    keys: [customer_id]
    tracked: [email, full_name, phone, city]
    quality:
      - {type: accepted_values, column: city, values: [Oslo, Rome], action: quarantine}
  orders:
    kind: fact
    target: fact_orders
    keys: [order_id]
governance:
  tags: {dim_customer.email: [pii], dim_customer.full_name: [pii], dim_customer.phone: [pii]}
"""


def project(database: Database, folder: Path, encrypted: bool) -> Path:
    """A project capturing schema w of ``database`` (its own slot), lake encryption on or off."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "riverbed.yaml"
    config.write_text(
        f'source:\n  dsn: "{database.dsn}"\n  schema: w\n  slot: e_{uuid.uuid4().hex[:8]}\n'
        f"lake:\n  path: .riverbed/lake\n  encryption: {{enabled: {str(encrypted).lower()}}}\n"
        "logs:\n  path: .riverbed/logs/riverbed.jsonl\n  level: debug\n" + TABLES
    )
    return config


def lake_of(config: Path) -> LakeStorage:
    loaded = parse_config(config.read_text(), str(config))
    return open_storage(loaded.lake, config.parent)


def parquet_files(config: Path) -> list[Path]:
    return sorted((config.parent / ".riverbed" / "lake").rglob("*.parquet"))


def cells(storage: LakeStorage, config: Path) -> str:
    """Every value of every lake file, decrypted, as one text to search."""
    root = config.parent / ".riverbed" / "lake"
    rows = [
        read_table(storage, str(p.relative_to(root))).to_pylist() for p in parquet_files(config)
    ]
    return json.dumps(rows, default=str)


def warehouse(config: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The star schema's rows, without the columns that say when a load ran."""
    path = config.parent / ".riverbed" / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as db:
        # the star schema (main): not the load's bookkeeping (riverbed_load) or the copies
        tables = "select table_name from duckdb_tables() where schema_name = 'main'"
        names = [r[0] for r in db.sql(tables).fetchall()]
        found = {}
        for name in sorted(names):
            columns = [
                c
                for c in db.sql(f"select * from {name} limit 0").columns
                if "load" not in c and "batch" not in c
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            found[name] = db.sql(f"select {listed} from {name} order by all").fetchall()
        return found


def history(database: Database, configs: list[Path]) -> None:
    """The same changes into each project; all streamed (each snapshot is of empty tables), so
    both lakes hold them with the same positions and commit times."""
    sql(
        database,
        "create schema w;"
        "create table w.customers (customer_id int primary key, email text, full_name text,"
        " phone text, city text);"
        "create table w.orders (order_id int primary key, customer_id int, amount numeric(10,2))",
    )
    for config in configs:
        captured = run_cli("capture", "--once", "-q", "-c", str(config))
        assert captured.code == 0, captured.text
    sql(
        database,
        f"insert into w.customers values (7, '{EMAIL}', '{NAME}', '{PHONE}', 'Oslo')",
        "insert into w.customers values (8, 'otto@keep.test', 'Otto Kept', '+1 555', 'Rome')",
        "insert into w.orders values (100, 7, 12.50), (101, 8, 3.00)",
    )
    for config in configs:
        pipeline(config)
    sql(
        database,
        "update w.customers set city = 'Rome' where customer_id = 7",
        "update w.customers set city = 'Atlantis' where customer_id = 7",  # quarantined
        "insert into w.orders values (102, 7, 7.00)",
    )
    for config in configs:
        pipeline(config)


def parse(text: str) -> Any:
    return sqlglot.parse_one(text, dialect="duckdb")


def key_texts(keyring: Path) -> list[bytes]:
    """Every master key of the keyring as raw bytes, base64 and hex: what must appear nowhere."""
    data = json.loads(keyring.read_text())
    found = []
    for entry in data["masters"].values():
        for encoded in entry["versions"].values():
            raw = base64.b64decode(encoded)
            found += [raw, encoded.encode(), raw.hex().encode()]
    return found


def files_holding(folder: Path, needles: list[bytes], skip: Path) -> list[str]:
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and p != skip and any(n in p.read_bytes() for n in needles)
    ]


def test_an_encrypted_lake_gives_the_same_warehouse_and_keeps_its_keys(
    database: Database, tmp_path: Path
) -> None:
    encrypted = project(database, tmp_path / "encrypted", True)
    plain = project(database, tmp_path / "plain", False)
    history(database, [encrypted, plain])
    home = encrypted.parent / ".riverbed"
    keyring = home / "keyring"
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"

    files = parquet_files(encrypted)
    kinds = {p.relative_to(home / "lake").parts[0] for p in files}
    assert kinds == {"raw", "staged", "quarantine"}, kinds
    for path in files:
        with pytest.raises(OSError, match="encrypted"):
            pq.read_table(path)  # no keys, no rows, not even the schema
        data = path.read_bytes()
        assert not [v for v in PERSONAL if v.encode() in data], path
        assert b"email" not in data  # the footer, column names included, is encrypted
    storage = lake_of(encrypted)
    assert all(v in cells(storage, encrypted) for v in PERSONAL)  # the keyring opens them all
    assert warehouse(encrypted) == warehouse(plain)

    # rotation: new master keys, the same files read, the old keys gone from everywhere
    old_keys = key_texts(keyring)
    before = {p: p.read_bytes() for p in files}
    rotated = run_cli("keys", "rotate", "-c", str(encrypted))
    assert rotated.code == 0, rotated.text
    said = " ".join(rotated.out.split())  # wrapped to the terminal's width
    assert "rotated the master keys" in said and "footer v2, pii v2" in said
    assert "no lake file rewritten" in said
    assert {p: p.read_bytes() for p in parquet_files(encrypted)} == before
    assert not [k for k in old_keys if k in keyring.read_bytes()]
    assert all(v in cells(lake_of(encrypted), encrypted) for v in PERSONAL)
    sql(database, "insert into w.orders values (103, 8, 1.00)")
    pipeline(encrypted)
    pipeline(plain)
    assert warehouse(encrypted) == warehouse(plain)
    audit = json.loads(run_cli("audit", "--json", "-c", str(encrypted)).out)
    change = next(r for r in audit if r["action"] == "rotate")
    assert change["detail"]["master_versions"] == {"footer": 2, "pii": 2}
    # no key, old or new, in the logs, the state store, the warehouse or the audit trail
    leaked = files_holding(home, old_keys + key_texts(keyring), skip=keyring)
    assert leaked == []

    # forget reaches into the encrypted files
    forgot = run_cli("forget", "customers", "7", "-c", str(encrypted))
    assert forgot.code == 0, forgot.text
    assert not [v for v in PERSONAL if v in cells(lake_of(encrypted), encrypted)]
    assert "Otto Kept" in cells(lake_of(encrypted), encrypted)


def test_a_missing_or_wrong_keyring_is_one_line_and_sets_nothing_aside(
    database: Database, tmp_path: Path
) -> None:
    config = project(database, tmp_path / "p", True)
    sql(
        database,
        "create schema w;"
        "create table w.customers (customer_id int primary key, email text, full_name text,"
        " phone text, city text);"
        "create table w.orders (order_id int primary key, customer_id int, amount numeric(10,2))",
        f"insert into w.customers values (7, '{EMAIL}', '{NAME}', '{PHONE}', 'Oslo')",
    )
    captured = run_cli("capture", "--once", "-q", "-c", str(config))
    assert captured.code == 0, captured.text
    keyring = config.parent / ".riverbed" / "keyring"
    kept = keyring.read_bytes()

    keyring.unlink()
    ran = run_cli("run", "--once", "-q", "-c", str(config))
    assert ran.code == 1
    assert "lake.encryption" in ran.err and "Traceback" not in ran.err, ran.err
    assert "restore the keyring" in ran.err
    # nor does capture make a new keyring for new files beside the ones it cannot read
    again = run_cli("capture", "--once", "-q", "-c", str(config))
    assert again.code == 1 and "restore the keyring" in again.err, again.text
    assert not keyring.exists()

    # another keyring (made on first use by this command): its keys open no file
    keyring.unlink(missing_ok=True)
    keyring_at(keyring).wrap(os.urandom(16), "footer")
    ddl = run_cli("ddl", "-c", str(config))
    assert ddl.code == 1
    lines = [line for line in ddl.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "lake.encryption" in lines[0], ddl.err

    keyring.write_bytes(kept)
    ran = run_cli("run", "--once", "-q", "--json", "-c", str(config))
    assert ran.code == 0, ran.text
    assert not (config.parent / ".riverbed" / "lake" / "bad").exists()  # nothing set aside


def test_a_rotation_killed_halfway_completes_on_rerun(tmp_path: Path) -> None:
    config = tmp_path / "riverbed.yaml"
    config.write_text("lake:\n  encryption: {enabled: true}\n" + TABLES)
    storage = lake_of(config)
    table = pa.table({"customer_id": [7], "email": [EMAIL]})
    write_table(storage, "raw/customers/a.parquet", table)
    keyring = tmp_path / ".riverbed" / "keyring"
    old = key_texts(keyring)
    # the rotation dies (SIGKILL) just as it would replace the keyring
    killer = (
        "import os, signal, sys\n"
        "real = os.replace\n"
        "def dying(src, dst, *a, **k):\n"
        "    if str(dst).endswith('keyring'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *a, **k)\n"
        "os.replace = dying\n"
        "sys.argv = ['riverbed', 'keys', 'rotate', '-c', sys.argv[1]]\n"
        "from riverbed.__main__ import main\n"
        "main()\n"
    )
    killed = subprocess.run([sys.executable, "-c", killer, str(config)], capture_output=True)
    assert killed.returncode == -9
    assert list(keyring.parent.glob(".keyring.*.tmp"))  # what the kill left: the new keyring
    assert key_texts(keyring) == old  # the old keyring, whole
    rerun = run_cli("keys", "rotate", "-c", str(config))
    assert rerun.code == 0, rerun.text
    assert not list(keyring.parent.glob(".keyring.*.tmp"))
    assert not [k for k in old if k in keyring.read_bytes()]
    assert read_table(lake_of(config), "raw/customers/a.parquet").equals(table)


def test_duckdb_reads_encrypted_files(tmp_path: Path) -> None:
    """(Spark: tests/test_spark_engine.py, on its session's engine.)"""
    from riverbed.transform.duckdb_engine import DuckDBEngine

    config = tmp_path / "riverbed.yaml"
    config.write_text("lake:\n  encryption: {enabled: true}\n" + TABLES)
    storage = lake_of(config)
    table = pa.table({"customer_id": [1, 2, 3], "email": ["a@x", None, EMAIL]})
    write_table(storage, "raw/customers/a.parquet", table)
    write_table(storage, "raw/customers/b.parquet", table.slice(0, 1))
    root = tmp_path / ".riverbed" / "lake"
    paths = [str(root / "raw/customers/a.parquet"), str(root / "raw/customers/b.parquet")]
    plain = LakeConfig.model_validate({"path": str(root)})  # encryption off: refused, one line
    with pytest.raises(LakeError, match="is encrypted; turn lake.encryption on"):
        read_table(open_storage(plain, tmp_path), "raw/customers/a.parquet")
    engine = DuckDBEngine()
    engine.register_files("c", paths, table.schema, storage.crypto)
    got = engine.query(parse("SELECT count(*) AS n, max(email) AS e FROM c WHERE customer_id < 3"))
    assert got.to_pylist() == [{"n": 3, "e": "a@x"}]
    engine.close()


def test_an_s3_lake_asks_for_server_side_encryption(
    s3_endpoint: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    monkeypatch.setenv(KEY_VAR, "testing")
    monkeypatch.setenv(SECRET_VAR, SECRET)
    plain = s3_config(s3_endpoint)
    lake = LakeConfig.model_validate(
        {**plain.model_dump(exclude_none=True), "s3_sse": "AES256", "encryption": {"enabled": True}}
    )
    storage = open_storage(lake, tmp_path)
    table = pa.table({"customer_id": [7], "email": [EMAIL]})
    write_table(storage, "raw/customers/a.parquet", table)  # streamed (open_atomic)
    storage.write_atomic("raw/customers/small.bin", b"x")  # one PutObject
    storage.rename("raw/customers/a.parquet", "raw/customers/b.parquet")  # CopyObject
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    prefix = lake.path.removeprefix("s3://").split("/", 1)[1]
    for name in ("small.bin", "b.parquet"):
        head = client.head_object(Bucket="riverbed-test", Key=f"{prefix}/raw/customers/{name}")
        assert head["ServerSideEncryption"] == "AES256", name
    assert storage.list("raw") == ["raw/customers/b.parquet", "raw/customers/small.bin"]
    assert read_table(storage, "raw/customers/b.parquet").equals(table)


def test_encryption_settings_are_checked_at_the_edge() -> None:
    with pytest.raises(ValidationError, match="s3_sse is only used"):
        LakeConfig.model_validate({"path": "lake", "s3_sse": "AES256"})
    with pytest.raises(ValidationError, match="s3_sse_kms_key_id needs s3_sse: aws:kms"):
        LakeConfig.model_validate({"path": "s3://bucket-a/x", "s3_sse_kms_key_id": "k"})
    with pytest.raises(ValidationError, match="master key id"):
        LakeConfig.model_validate({"encryption": {"enabled": True, "pii_key": "no spaces"}})
    demo = parse_config(
        (Path(__file__).parent.parent / "riverbed/config/riverbed.yaml").read_text(), "demo"
    )
    assert demo.lake.encryption.enabled
    assert {"email", "full_name", "phone"} <= demo.lake.encryption.personal


def test_a_keyring_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text("not json")
    with pytest.raises(KeyringError, match="is not a Riverbed keyring"):
        keyring_at(path).unwrap("kek-x", "footer")


def test_a_master_key_from_the_environment_seals_the_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "riverbed.yaml"
    config.write_text(
        "lake:\n  encryption: {enabled: true, master_key: {env: RB_TEST_LAKE_KEY}}\n" + TABLES
    )
    monkeypatch.setenv("RB_TEST_LAKE_KEY", "correct horse battery staple")
    table = pa.table({"customer_id": [7], "email": [EMAIL]})
    write_table(lake_of(config), "raw/customers/a.parquet", table)
    keyring = tmp_path / ".riverbed" / "keyring"
    stored = json.loads(keyring.read_text())
    assert stored["masters"] == {} and "sealed" in stored  # the file alone holds no master key

    rotated = run_cli("keys", "rotate", "-c", str(config))
    assert rotated.code == 0, rotated.text
    for env, says in (
        ({"RB_TEST_LAKE_KEY": "wrong"}, "does not open the keyring"),
        ({}, "environment variable RB_TEST_LAKE_KEY is not set"),
    ):
        monkeypatch.delenv("RB_TEST_LAKE_KEY")
        failed = run_cli("keys", "rotate", "-c", str(config), env=env)
        monkeypatch.setenv("RB_TEST_LAKE_KEY", "correct horse battery staple")
        lines = [line for line in failed.err.splitlines() if line.strip()]
        assert failed.code == 1 and len(lines) == 1, failed.text
        assert lines[0].startswith("error: lake.encryption.master_key") and says in lines[0], lines
        assert "wrong" not in lines[0] and "correct horse" not in lines[0]
    assert read_table(lake_of(config), "raw/customers/a.parquet").equals(table)
