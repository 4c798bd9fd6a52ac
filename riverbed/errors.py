"""Errors a user can act on.

    RiverbedError            any error with a message meant for the user (exit 1)
    ├── ConfigError          riverbed.yaml is wrong; carries one line per problem (exit 2)
    ├── UsageError           a command-line option's value is wrong (exit 2)
    ├── SourceError          the source PostgreSQL cannot be reached or managed (transient)
    ├── LakeError            riverbed.lake.storage; transient per error
    ├── WarehouseError       riverbed.load.warehouse; transient per error
    ├── TransformEngineError riverbed.transform.engine; transient per error
    └── QualityFailure       riverbed.transform.runner: a rule with action fail (class quality)

Errors from libraries below (psycopg, subprocess, yaml) are translated into these at the
boundary where they happen, chained with ``from exc``, so the CLI can print one clear line
and never a traceback. Whether an error is worth retrying is decided there too (``transient``);
the orchestrator's Retry rules read it (riverbed.orchestrate.machine.classify).
"""

from __future__ import annotations

import re


class RiverbedError(Exception):
    """An error whose message tells the user what is wrong and how to fix it.

    ``transient`` is decided where the error is raised: True when the same work may succeed
    later (I/O, a lost connection, a lock), so the orchestrator's Retry applies; False for
    errors that repeat until someone fixes something (config, SQL, data)."""

    exit_code = 1
    transient = False


class ConfigError(RiverbedError):
    """The configuration is invalid; ``problems`` holds one human line per mistake."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class UsageError(RiverbedError):
    """An option or argument the command line was given is wrong (a value out of its choices,
    two options that exclude each other): exit 2, as for the usage errors typer catches."""

    exit_code = 2


class SourceError(RiverbedError):
    """The source database could not be started, reached or queried."""

    transient = True  # a server restarting or a network blip; a bad DSN fails every retry too


def first_line(exc: BaseException) -> str:
    """A library error's first line (its class name when it has no message): the part of a
    driver's multi-line report worth putting in a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist')


def missing_database(exc: BaseException) -> str | None:
    """The database a PostgreSQL server said does not exist when refusing a connection, if
    that is why: then the server is up, and the fix is to create the database or name
    another, not to start anything. (libpq gives connection failures no SQLSTATE.)"""
    match = _MISSING_DATABASE.search(str(exc))
    return match.group(1) if match else None
