"""A throwaway embedded PostgreSQL for the benchmarks: fresh data folder under /tmp, free port.

Not a benchmark itself; ``bench/seed.py`` and ``bench/workload.py`` import it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from riverbed.config.source import EmbeddedSourceConfig
from riverbed.source.embedded import EmbeddedServer


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def command_line() -> str:
    return " ".join([Path(sys.executable).name.replace("python3", "python"), *sys.argv])


@contextlib.contextmanager
def throwaway_server(keep: bool = False) -> Iterator[tuple[EmbeddedServer, Path]]:
    """Start a fresh embedded server in a new folder under /tmp; stop and delete it afterwards."""
    work = Path(tempfile.mkdtemp(prefix="riverbed-bench-", dir="/tmp"))
    work.chmod(0o755)  # the server runs as another system user when we are root
    server = EmbeddedServer(work / "pg", EmbeddedSourceConfig(port=free_port()))
    try:
        started = time.perf_counter()
        server.up()
        print(
            f"server    embedded PostgreSQL on 127.0.0.1:{server.settings.port}, data in {server.data_dir} "
            f"(up in {time.perf_counter() - started:.1f} s)"
        )
        yield server, work
    finally:
        if keep:
            print(f"kept      server running: {server.dsn('postgres')}")
            print(
                f"          stop with: {Path(_pg_ctl())} -D {server.data_dir} stop  (as user embedded_postgres)"
            )
        else:
            try:
                server.down()
            finally:
                shutil.rmtree(work, ignore_errors=True)


def _pg_ctl() -> str:
    from riverbed.source.embedded import _bin

    return str(_bin("pg_ctl"))
