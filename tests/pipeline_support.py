"""The end-to-end tests' shared helpers (tests/test_e2e.py, test_three_hosts, tests/chaos):
long-running `riverbed` processes, a project on a test database, and the checks that the
warehouse agrees with the source: every dimension's current rows, every fact's events, no
source position loaded twice."""

from __future__ import annotations

import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import yaml
from key_trace import trace_keys
from psycopg.rows import dict_row

from conftest import CliResult, Database, run_cli

CHILD_ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


# `python -m riverbed ARGS` with Python's own SIGINT handler, whatever the parent ignored
SIGINT_LAUNCHER = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('riverbed', run_name='__main__', alter_sys=True)"
)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """One long-running `riverbed ...` process, its output in files (a pipe nobody reads
    would fill and block it), in a process group of its own so nothing it starts outlives it."""

    def __init__(
        self,
        name: str,
        args: list[str],
        logs: Path,
        cwd: Path,
        threads: bool = False,
        prefix: tuple[str, ...] = (),
    ):
        """``threads``: started from a thread other than the main one (a supervisor's), where
        a preexec_fn can deadlock the child before exec: SIGINT is reset by a launcher.
        ``prefix``: a command the process runs under (setpriv, say)."""
        self.name = name
        self.out = logs / f"{name}.out"
        self.err = logs / f"{name}.err"
        # Ctrl-C must reach it as a terminal's would, even when this test itself runs in a
        # background job, which starts with SIGINT ignored: `run --every` relies on Python's
        # default handler and would inherit the ignore
        command = [sys.executable, "-c", SIGINT_LAUNCHER] if threads else ["-m", "riverbed"]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*prefix, *command, *args]
                if threads
                else [*prefix, sys.executable, *command, *args],
                cwd=cwd,
                env=CHILD_ENV,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=None if threads else default_sigint,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """kill -9, as a crash would: no handler runs, no file is closed cleanly."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, then wait for it to finish on its own."""
        if self.alive():
            os.killpg(self.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        text = f"--- {self.name} (pid {self.pid}, exit {self.proc.poll()}) stderr:\n"
        text += self.err.read_text()[-4000:]
        text += f"\n--- {self.name} stdout:\n" + self.out.read_text()[-2000:]
        return text


def wait_for(what: str, condition: Callable[[], Any], timeout: float, children: list[Child]) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with the children's
    output if it does not within ``timeout`` seconds, or if a child died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        dead = [c for c in children if not c.alive()]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(c.name for c in dead)} exited" if dead else "timed out"
            pytest.fail(f"waiting for {what}: {reason}\n" + "\n".join(c.output() for c in dead))
        time.sleep(0.02)


def cli(config: Path, *args: str, timeout: float = 300) -> CliResult:
    result = run_cli(*args, "-c", str(config), timeout=timeout)
    assert result.code == 0, f"riverbed {' '.join(args)} exited {result.code}:\n{result.text}"
    return result


def query(config: Path, sql: str) -> list[dict[str, Any]]:
    result = cli(config, "query", "--as", "admin", "--format", "json", sql)
    return json.loads(result.out)  # type: ignore[no-any-return]


def text(value: Any) -> str | None:
    """One comparable form for source values (psycopg) and warehouse values (JSON):
    Decimal('70.88') and "70.88", True and true, 6 and 6."""
    return None if value is None else str(value)


def demo_project(folder: Path, database: Database, warehouse: Database | None = None) -> Path:
    """The demo config from `riverbed init` in ``folder``, pointed at ``database``, with its
    own slot and publication, the lake and state under folder/.riverbed (the defaults), the
    warehouse the DuckDB default or ``warehouse`` (PostgreSQL), and raw files closed every 2 s
    instead of 60 so that runs find work while traffic flows."""
    assert run_cli("init", str(folder)).code == 0
    path = folder / "riverbed.yaml"
    config = yaml.safe_load(path.read_text())
    suffix = uuid.uuid4().hex[:8]
    config["source"]["dsn"] = database.dsn
    config["source"]["slot"] = f"e2e_{suffix}"
    config["source"]["publication"] = f"e2e_{suffix}"
    config["lake"]["max_seconds"] = 2
    if warehouse is not None:
        config["warehouse"] = {"engine": "postgres", "dsn": warehouse.dsn}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def source_rows(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the shop's tables, read in one snapshot."""
    with database.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("set transaction isolation level repeatable read")
        tables = ("customers", "sellers", "products", "orders", "order_items", "returns")
        return {t: cur.execute(f"select * from shop.{t}").fetchall() for t in tables}


Ask = Callable[[Path, str], list[dict[str, Any]]]  # SQL as admin on a project's warehouse


def check_dimensions(
    project: Path, rows: dict[str, list[dict[str, Any]]], pii_key: bytes, ask: Ask = query
) -> None:
    """Each dimension's current, live rows are the source table's rows, key by key, with the
    config's transforms applied: same keys, same values, one current row per key."""

    def hashed(value: str | None) -> str | None:
        # pii: {email: hash} is HMAC-SHA256 with the project's key (.riverbed/pii.key when
        # governance.pii_key is unset); full_name (mask) and phone (redact) are kept in the
        # warehouse and only masked at query time, and admin reads them unmasked
        return None if value is None else hmac.new(pii_key, value.encode(), sha256).hexdigest()

    def upper_trim(value: str | None) -> str | None:  # transforms: {country: upper(trim(...))}
        return None if value is None else value.strip(" ").upper()

    dimensions: dict[str, tuple[str, str, list[str], dict[str, Callable[[Any], Any]]]] = {
        # target: (source, natural key, compared columns, source-side transform per column)
        "dim_customer": (
            "customers",
            "customer_id",
            ["email", "full_name", "phone", "city", "country", "region"],
            {"email": hashed, "country": upper_trim},
        ),
        "dim_seller": ("sellers", "seller_id", ["name", "city", "country", "region"], {}),
        # tracked columns, and description: type1, overwritten in place (and TOAST-sized)
        "dim_product": (
            "products",
            "product_id",
            ["name", "category", "price", "seller_id", "is_active", "description"],
            {},
        ),
    }
    for target, (table, natural, compared, transform) in dimensions.items():
        listed = ", ".join([natural, *compared])
        current = ask(project, f"select {listed}, is_deleted from {target} where is_current_record")
        per_key = Counter(r[natural] for r in current)
        doubled = sorted(k for k, n in per_key.items() if n > 1)
        assert not doubled, f"{target}: keys with more than one current row: {doubled[:20]}"
        warehouse = {
            r[natural]: tuple(text(r[c]) for c in compared) for r in current if not r["is_deleted"]
        }
        expected = {
            r[natural]: tuple(text(transform.get(c, lambda v: v)(r[c])) for c in compared)
            for r in rows[table]
        }
        missing = sorted(expected.keys() - warehouse.keys())
        extra = sorted(warehouse.keys() - expected.keys())
        assert not missing and not extra, (
            f"{target}: missing keys {missing}, extra keys {extra}\n"
            + trace_keys(project, target, table, natural, [*missing, *extra], ask)
        )
        differ = {
            k: {c: (e, w) for c, e, w in zip(compared, expected[k], warehouse[k]) if e != w}
            for k in expected
            if expected[k] != warehouse[k]
        }
        assert not differ, (
            f"{target}: {len(differ)} keys differ, (source, warehouse) per column: "
            f"{dict(list(differ.items())[:5])}\n"
            + trace_keys(project, target, table, natural, list(differ), ask)
        )


def check_facts(project: Path, rows: dict[str, list[dict[str, Any]]], ask: Ask = query) -> None:
    """No source position twice in any fact; each source row's insert (or snapshot) event
    exactly once; a delete event for every row gone from the source and none for a live one;
    and the latest event of each live key (by source position) carries the source's values."""
    facts = {
        # target: (source, natural key, columns the latest event must match)
        "fact_order_items": (
            "order_items",
            "order_item_id",
            ["order_id", "product_id", "seller_id", "quantity", "unit_price"],
        ),
        "fact_returns": ("returns", "return_id", ["order_item_id", "status", "refund_amount"]),
        "fact_order_status": ("orders", "order_id", ["customer_id", "status"]),
    }
    for target, (table, natural, compared) in facts.items():
        twice = ask(
            project,
            f"select _lsn, _seq, count(*) as n from {target} group by _lsn, _seq having count(*) > 1",
        )
        assert not twice, f"{target}: source positions loaded twice: {twice[:5]}"
        events = ask(
            project,
            f"select {natural}, {', '.join(compared)}, _op, _lsn, _seq from {target}"
            " order by _lsn, _seq",
        )
        ops = Counter(e["_op"] for e in events)
        assert set(ops) <= {"L", "I", "U", "D"}, ops
        # snapshot rows carry _op 'L' (capture.include_op_for_full_load: false), inserts 'I'
        inserts = Counter(e[natural] for e in events if e["_op"] in ("L", "I"))
        deletes = {e[natural] for e in events if e["_op"] == "D"}
        in_source = {r[natural] for r in rows[table]}
        doubled = sorted(k for k, n in inserts.items() if n > 1)
        assert not doubled, f"{target}: keys inserted more than once: {doubled[:20]}"
        not_loaded = sorted(in_source - inserts.keys())
        assert not not_loaded, (
            f"{target}: source rows without an insert event: {not_loaded[:20]}\n"
            + trace_keys(project, target, table, natural, not_loaded, ask)
        )
        revived = sorted(deletes & in_source)
        assert not revived, (
            f"{target}: live source rows with a delete event: {revived[:20]}\n"
            + trace_keys(project, target, table, natural, revived, ask)
        )
        gone = sorted(inserts.keys() - in_source - deletes)
        assert not gone, (
            f"{target}: rows gone from the source without a delete event: {gone}\n"
            + trace_keys(project, target, table, natural, gone, ask)
        )
        latest = {e[natural]: e for e in events}  # in source order: the last one wins
        stale = {}
        for r in rows[table]:
            want = tuple(text(r[c]) for c in compared)
            event = latest[r[natural]]
            found = tuple(text(event[c]) for c in compared)
            if found != want:
                stale[r[natural]] = (want, found, event["_op"])
        assert not stale, (
            f"{target}: {len(stale)} keys whose latest event is not the source's current row, "
            f"(source, latest event, its _op): {dict(list(stale.items())[:5])}"
        )
