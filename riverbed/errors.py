"""Errors a user can act on, and how each is classified for retries.

Every error meant for the user is a RiverbedError (exit 1 unless said otherwise); its
``error_class`` (an ErrorClass) says what retrying it can do::

    RiverbedError                  riverbed.errors; TERMINAL unless said otherwise
    ├── ConfigError                riverbed.yaml is wrong; one line per problem (exit 2)
    ├── UsageError                 a command-line option's value is wrong (exit 2)
    ├── SourceError                the source PostgreSQL cannot be started, reached or queried
    │                              (TRANSIENT; TERMINAL when its database does not exist)
    ├── CaptureSetupError          riverbed.capture.slot: the source is not ready for capture
    ├── SlotReplaced               riverbed.errors: the slot was confirmed past the lake (another
    │                              project reads it); raised by riverbed.capture.lag
    ├── ProtocolError              riverbed.capture.pgoutput: a malformed replication message
    │                              (also a ValueError)
    ├── UnrepresentableValue       riverbed.lake.pgtypes: a value with no exact Arrow
    │                              equivalent (also a ValueError)
    ├── LakeError                  riverbed.lake.storage: a lake read or write; per error
    │   └── LakeFileMissing        the file does not exist (also a FileNotFoundError)
    ├── StateStoreFull             riverbed.state.sql.database: the state store's disk is full
    │                              (TRANSIENT: a follower waits for room)
    ├── TransformEngineError       riverbed.transform.engine: a statement failed; per error
    ├── RuleError                  riverbed.transform.rules.context: a quality rule cannot
    │                              run
    ├── QualityFailure             riverbed.transform.runner: a rule with action fail (QUALITY)
    ├── WarehouseError             riverbed.load.warehouse: a statement, load or connection;
    │   │                          per error
    │   ├── QueryStopped           a query ended early by Warehouse.interrupt (timeout, Ctrl-C)
    │   └── WarehouseBusy          another process holds the DuckDB file past the wait (TRANSIENT)
    ├── NotifyError                riverbed.observe.notify: a notification was not delivered
    ├── InjectedFault              riverbed.orchestrate.executor: fault_injection (its class)
    ├── QueryInterrupted           riverbed.cli.query: Ctrl-C stopped `riverbed query` (exit 130)
    ├── GovernError                riverbed.govern.policy: a principal or policy cannot govern
    │   │                          a query (no such principal, a missing attribute)
    │   └── Refused                riverbed.govern.gateway: the gateway refused a query
    └── AlreadySeeded              riverbed.shop.seed: the demo schema already holds data

Errors from libraries below (psycopg, duckdb, pyarrow, subprocess, yaml) are translated into
these at the boundary where they happen, chained with ``from exc``, so the CLI can print one
clear line and never a traceback. Whether an error is worth retrying is decided there too:
the class's ``error_class`` default, or ``error_class=`` (``transient=`` for a yes/no) when
the instance is made. Nothing else classifies errors; riverbed.orchestrate.machine.classify
reads ``error_class``, and the config's ``errors: [transient, terminal, quality]`` are its
values.

Who retries what: one layer per concern.

- A task of an orchestrated run (``riverbed run``): the orchestrator's Retry rules
  (``orchestration.retry``, a state's ``retry``; riverbed.orchestrate.executor), for the
  classes they name.
- The transform outside the orchestrator (``riverbed run --stage transform``): its own
  ``transform.retries``, per batch step (riverbed.transform.runner.TransformRun._with_retries).
  Under the orchestrator it does not retry when the transform state's Retry rules take
  transient errors, so attempts do not multiply; it keeps its own otherwise.
- ``riverbed capture --follow``: its reconnect loop (``capture.reconnect.capture_reconnecting``),
  on a TRANSIENT error once capture has a position, until stopped; ``--once`` does not retry.
- A webhook delivery: the webhook notifier itself, with tenacity, within
  RETRY_WINDOW_SECONDS (riverbed.observe.notify.webhook); a NotifyError is not retried again.
"""

from __future__ import annotations

import re
from enum import StrEnum


class ErrorClass(StrEnum):
    """What retrying an error can do; the values are the orchestrator's error classes
    (``errors: [transient]`` in a Retry or Catch rule)."""

    TRANSIENT = "transient"  # the same work may succeed later: I/O, a lost connection, a lock
    TERMINAL = "terminal"  # it repeats until someone fixes something: config, SQL, a column
    QUALITY = "quality"  # a quality rule with action fail stopped a batch: fix the data


class RiverbedError(Exception):
    """An error whose message tells the user what is wrong and how to fix it.

    ``error_class`` is decided where the error is raised: the class says its default
    (TERMINAL here), and an instance whose class depends on the failure is made with
    ``error_class=`` or, for a yes/no, ``transient=`` (True: TRANSIENT, False: TERMINAL).
    ``transient`` reads it back."""

    exit_code = 1
    error_class: ErrorClass = ErrorClass.TERMINAL

    def __init__(
        self, *args: object, error_class: ErrorClass | None = None, transient: bool | None = None
    ):
        super().__init__(*args)
        if transient is not None:
            assert error_class is None, "error_class= or transient=, not both"
            error_class = ErrorClass.TRANSIENT if transient else ErrorClass.TERMINAL
        if error_class is not None:
            self.error_class = error_class

    @property
    def transient(self) -> bool:
        """Whether the same work may succeed later (error_class TRANSIENT)."""
        return self.error_class is ErrorClass.TRANSIENT


class ConfigError(RiverbedError):
    """The configuration is invalid; ``problems`` holds one human line per mistake."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class SlotReplaced(RiverbedError):
    """The slot was confirmed past the lake's position and ceiling: another project reads from
    it (riverbed.capture.slot.slot_is_past), so what it holds says nothing about this lake.
    Here, not in capture, because observe (status) tells it apart without importing capture."""


class UsageError(RiverbedError):
    """An option or argument the command line was given is wrong (a value out of its choices,
    two options that exclude each other): exit 2, as for the usage errors typer catches."""

    exit_code = 2


class SourceError(RiverbedError):
    """The source database could not be started, reached or queried."""

    # a server restarting or a network blip; a bad DSN fails every retry too
    error_class = ErrorClass.TRANSIENT


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


# a server that answered a connection with FATAL refused it for good (a wrong password, no
# such role or database, no pg_hba.conf entry: retrying changes nothing) unless it says why
# later would do (psycopg gives connection failures no SQLSTATE, so their text it is)
_TRANSIENT_FATAL = ("starting up", "shutting down", "in recovery", "too many", "not yet accepting")


def transient_connect(exc: BaseException) -> bool:
    """Whether a failed PostgreSQL connection may succeed when retried: no answer (the server
    down, unreachable, too slow), or a refusal that names a passing state."""
    text = str(exc)
    return "FATAL:" not in text or any(reason in text for reason in _TRANSIENT_FATAL)


def dsn_display(dsn: str, key: str) -> str:
    """The libpq ``dsn`` (riverbed.yaml's ``key``) as a URI without secrets, for messages."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return f"(invalid {key})"
    user = parts.get("user", "")
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    return f"postgresql://{user}{'@' if user else ''}{host}:{port}/{parts.get('dbname', '')}"
