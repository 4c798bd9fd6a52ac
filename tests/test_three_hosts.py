"""Issue 20's scale-out test: capture, the pipeline and status each from a working folder of
its own (three hosts, no local file shared), on an S3 lake (moto), the state store and the
warehouse in PostgreSQL; each is killed with kill -9 once in the middle of live traffic and
started again, and the warehouse then agrees with the source.

What the folders share is only what a team's hosts would: the same riverbed.yaml, and the
secrets it names by environment variable (the S3 keys, the pii key that hashes personal
columns alike on every host). The lake's encryption keyring is a local file, so this project
leaves encryption off rather than copy it (README: the state store, several hosts).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pipeline_support
import pytest
import yaml
from pipeline_support import Child, check_dimensions, check_facts, cli, source_rows, wait_for

from conftest import Database, run_cli, s3_bucket
from riverbed.state.postgres import PostgresStore

BUCKET = "three-hosts"
SECRETS = {"RB_S3_KEY": "testing", "RB_S3_SECRET": "testing", "RB_PII_KEY": "hosts-share-it"}
HOSTS = ("capture_host", "pipeline_host", "status_host")
WORKLOAD_SECONDS = 15
SEED = ("--customers", "200", "--sellers", "20", "--products", "100", "--orders", "1500")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """The long-running processes started; any still alive at the end is killed, and their
    output printed (pytest shows it when the test fails)."""
    started: list[Child] = []
    yield started
    for child in started:
        if child.alive():
            child.kill9()
        print(child.output())


def host_configs(
    tmp_path: Path,
    source: Database,
    warehouse: Database,
    state: tuple[str, str],
    s3: str,
) -> dict[str, Path]:
    """The same riverbed.yaml in a folder per host: the demo config from `riverbed init`, on
    ``source``, its lake on S3, its warehouse and state store in PostgreSQL."""
    assert run_cli("init", str(tmp_path / "template")).code == 0
    config = yaml.safe_load((tmp_path / "template" / "riverbed.yaml").read_text())
    suffix = uuid.uuid4().hex[:8]
    config["source"].update(dsn=source.dsn, slot=f"hosts_{suffix}", publication=f"hosts_{suffix}")
    config["lake"] = {
        "path": f"s3://{BUCKET}/{suffix}",
        "endpoint_url": s3,
        "region": "us-east-1",
        "access_key_id": {"env": "RB_S3_KEY"},
        "secret_access_key": {"env": "RB_S3_SECRET"},
        "max_seconds": 2,
        "encryption": {"enabled": False},
    }
    config["warehouse"] = {"engine": "postgres", "dsn": warehouse.dsn}
    config["state"] = {"engine": "postgres", "dsn": state[0], "schema": state[1]}
    config["governance"]["pii_key"] = {"env": "RB_PII_KEY"}
    text = yaml.safe_dump(config, sort_keys=False)
    configs = {}
    for host in HOSTS:
        (tmp_path / host).mkdir()
        configs[host] = tmp_path / host / "riverbed.yaml"
        configs[host].write_text(text)
    return configs


def test_capture_pipeline_and_status_on_three_hosts_survive_kill_9(
    database: Database,
    warehouse_database: Database,
    pg_state: tuple[str, str],
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    children: list[Child],
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
        monkeypatch.setitem(pipeline_support.CHILD_ENV, name, value)
    s3_bucket(s3_server, BUCKET, SECRETS["RB_S3_KEY"], SECRETS["RB_S3_SECRET"])
    configs = host_configs(tmp_path, database, warehouse_database, pg_state, s3_server)
    capture_cfg, pipeline_cfg, status_cfg = (configs[h] for h in HOSTS)
    logs = tmp_path / "logs"
    logs.mkdir()
    state = PostgresStore(*pg_state)  # the test's own look at the shared store

    def start(name: str, config: Path, *args: str) -> Child:
        child = Child(name, [*args, "-c", str(config)], logs, config.parent)
        children.append(child)
        return child

    def streamed() -> int:
        return sum(1 for f in state.lake.files("raw") if not f.full_load)

    def running(pid: int) -> bool:
        return any(r.pid == pid for r in state.runs.running())

    try:
        # history and the snapshot, from the capture host
        cli(capture_cfg, "shop", "seed", *SEED, "--months", "1", "--seed", "5", "-q")
        cli(capture_cfg, "capture", "--once", "-q")

        capture = start("capture-1", capture_cfg, "capture", "--follow")
        runner = start("run-every-1", pipeline_cfg, "run", "--every", "2")
        workload = start(
            "shop-run",
            capture_cfg,
            "shop",
            "run",
            "--rate",
            "200",
            "--duration",
            str(WORKLOAD_SECONDS),
            "--dirty-ratio",
            "0",
            "--seed",
            "4",
            "-q",
        )

        # kill -9 capture once changes stream into the lake; start it again
        wait_for("a streamed raw file", lambda: streamed() >= 2, 90, [capture, workload])
        capture.kill9()
        capture = start("capture-2", capture_cfg, "capture", "--follow")

        # kill -9 `run --every` inside one of its runs; start it again: the lock the dead run
        # held on the state's server is free, and its run is taken over
        wait_for("a run in flight", lambda: running(runner.pid), 120, [runner, capture])
        runner.kill9()
        killed_pid = runner.pid
        runner = start("run-every-2", pipeline_cfg, "run", "--every", "2")

        # status from the third host while they run; one killed mid-flight leaves nothing
        # behind that the next one trips over
        status = start("status-1", status_cfg, "status", "--json")
        status.kill9()
        report = json.loads(cli(status_cfg, "status", "--json").out)
        assert report["capture"]["position"] is not None, report

        wait_for(
            "a run of the restarted `run --every` to succeed",
            lambda: [
                r for r in state.runs.latest(50) if r.pid == runner.pid and r.status == "succeeded"
            ],
            180,
            [runner, capture],
        )
        assert workload.proc.wait(timeout=WORKLOAD_SECONDS + 120) == 0, workload.output()
        assert runner.interrupt() == 0, runner.output()
        assert capture.interrupt() == 0, capture.output()

        # drain: the rest captured on the capture host, run on the pipeline host
        cli(capture_cfg, "capture", "--once", "-q")
        drained = json.loads(cli(pipeline_cfg, "run", "--once", "--json").out)
        assert drained["status"] == "succeeded", drained
        again = json.loads(cli(pipeline_cfg, "run", "--once", "--json").out)
        assert again["variables"].get("new_data") == 0, again

        runs = json.loads(cli(status_cfg, "runs", "--json", "--limit", "1000").out)
        killed = [r for r in runs if r["pid"] == killed_pid]
        assert killed and {r["status"] for r in killed} <= {"aborted", "succeeded"}, killed
        assert "aborted" in {r["status"] for r in killed}, killed
        report = json.loads(cli(status_cfg, "status", "--json").out)
        assert report["capture"]["files"] > 0, report
    finally:
        state.close()

    rows = source_rows(database)
    check_dimensions(pipeline_cfg, rows, pii_key=SECRETS["RB_PII_KEY"].encode())
    check_facts(pipeline_cfg, rows)
    # nothing of the state on local disk, on any host
    for host in HOSTS:
        local = {p.name for p in (tmp_path / host).rglob("*") if p.is_file()}
        assert not {n for n in local if n.endswith((".db", ".lock"))}, (host, local)
