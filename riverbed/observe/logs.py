"""Structured logs: JSON lines in a file for machines, one readable line on stderr for people.

Every record carries the orchestrator's context (``run_id``, ``state``, ``table``) without the
code that logs having to pass it: ``log_context`` keeps it in a ``contextvars.ContextVar``, and
a filter on our handlers copies it onto each record. Context variables follow ``asyncio``
tasks and code run through ``contextvars.copy_context().run``, but a plain
``threading.Thread`` (or ``ThreadPoolExecutor.submit``) starts with an EMPTY context: start
worker threads with ``target=contextvars.copy_context().run, args=(work, ...)`` for their
records to carry the run's context.

Redaction is a filter on the same handlers, so neither output can leak what it masks: values
registered with ``redact`` (passwords, tokens read from the config's secrets) and, always,
the password of a connection URL or key=value DSN. The registry of secrets is process-global
on purpose: logging itself is, and a secret must be masked whichever logger prints it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from riverbed.errors import RiverbedError
from riverbed.private import open_private, private_folders

LOG_FILE = "riverbed.jsonl"
MAX_BYTES = 20 * 1024 * 1024
BACKUPS = 5
MASK = "***"
CONTEXT_KEYS = ("run_id", "state", "table")  # shown in the console's [brackets]
_CORE_KEYS = frozenset({"time", "level", "logger", "event", "message", "exception", *CONTEXT_KEYS})

_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "riverbed_log_context", default=_NO_CONTEXT
)

# scheme://user:password@host  -> scheme://user:***@host (libpq wants '@' in a password
# percent-encoded, so the password ends at the first '@')
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)[^@\s]*(?=@)")
# password=secret / password = 'se cret' in libpq key=value DSNs and URL query strings; no
# word boundary on the left, so PGPASSWORD=... and db_password=... are masked too
_KV_PASSWORD = re.compile(
    r"(?P<head>(?:password|passwd)\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\",;&]+)", re.IGNORECASE
)

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_pattern: re.Pattern[str] | None = None


# --- context ---------------------------------------------------------------------------------


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (usually ``run_id``, ``state``, ``table``) to every record logged inside.

    Nested contexts add to the outer one; a field set to None is removed for the inner block.
    """
    merged = {**_context.get(), **fields}
    token = _context.set({k: v for k, v in merged.items() if v is not None})
    try:
        yield
    finally:
        _context.reset(token)


# --- redaction -------------------------------------------------------------------------------


def redact(*secrets: str) -> None:
    """Mask these values (e.g. passwords read from the environment) in every later record."""
    global _secrets_pattern
    with _secrets_lock:
        _secrets.update(s for s in secrets if s)
        # longest first, so a secret that contains another is masked whole
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


def redact_text(text: str) -> str:
    """``text`` with registered secrets and DSN/URL passwords replaced by ``***``."""
    pattern = _secrets_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    return _KV_PASSWORD.sub(rf"\g<head>{MASK}", text)


def redact_value(value: Any) -> Any:
    """``value`` with ``redact_text`` applied to every text in it, at any depth (mappings and
    sequences become dicts and lists; anything else but numbers its masked text)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # anything else is printed through str() by the formatters: mask that text
    return redact_text(str(value))


# --- filters ---------------------------------------------------------------------------------


class ContextFilter(logging.Filter):
    """Copies the ``log_context`` fields onto the record; explicit ``extra`` values win."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_riverbed_context", False):
            return True  # a second handler of ours sees the same record
        context = _context.get()
        for key in CONTEXT_KEYS:
            if getattr(record, key, None) is None and key in context:
                setattr(record, key, context[key])
        others = {k: v for k, v in context.items() if k not in CONTEXT_KEYS}
        fields = getattr(record, "fields", None)
        record.fields = {**others, **fields} if isinstance(fields, Mapping) else others
        record._riverbed_context = True
        return True


class RedactFilter(logging.Filter):
    """Masks secrets in the message, the fields, the context and the traceback.

    It rewrites the record in place (message formatted once, ``args`` dropped), so handlers
    after ours (pytest's, a library's) also see the masked text only.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_riverbed_redacted", False):
            return True
        record.msg = redact_text(record.getMessage())
        record.args = None
        for key in ("event", "fields", *CONTEXT_KEYS):
            if getattr(record, key, None) is not None:
                setattr(record, key, redact_value(getattr(record, key)))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._riverbed_redacted = True
        return True


# --- formatters ------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message, context, fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or message,
            "message": message,
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        for key, value in _fields(record).items():
            # a field named like a core key must not overwrite it, nor be lost
            entry[f"fields.{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL [run_id state table] message key=value ...`` in local time."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [self.formatTime(record, "%H:%M:%S"), f"{record.levelname:<5}"]
        context = [str(getattr(record, k)) for k in CONTEXT_KEYS if getattr(record, k, None)]
        if context:
            parts.append(f"[{' '.join(context)}]")
        message = record.getMessage()
        parts.append(message)
        # a field the message already shows (an error's text, an alarm's reason) is said once
        # here; the JSON log keeps every field
        parts.extend(
            f"{k}={_console_value(v)}"
            for k, v in _fields(record).items()
            if not (isinstance(v, str) and len(v) > 12 and v in message)
        )
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _console_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # quote only what would be ambiguous in a key=value line
    return json.dumps(text) if (not text or re.search(r"[\s\"=]", text)) else text


# --- setup -----------------------------------------------------------------------------------


class _PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file created 0600, the file after each rollover too: a log names tables,
    keys and the SQL that ran (riverbed.private)."""

    def _open(self) -> Any:
        return open_private(Path(self.baseFilename), self.mode, encoding=self.encoding)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time, like logging's last resort: test
    runners and the CLI's test harness swap (and close) stderr between invocations."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


_OURS = "_riverbed_handler"


def setup_logging(
    log_dir: Path,
    console_level: str = "INFO",
    console: bool = True,
    *,
    file_level: str | None = None,
    file_name: str = LOG_FILE,
) -> None:
    """Send every logger's records to ``log_dir/file_name`` (JSON lines, rotated at 20 MB, 5
    backups) at ``file_level`` (default: INFO, or ``console_level`` when that says more: the
    file is the record) and, when ``console``, to stderr at ``console_level``.

    Idempotent: a second call replaces the handlers of the first (so it may change the
    directory or level) instead of adding more.
    """
    console_no = _level(console_level)
    file_no = min(logging.INFO, console_no) if file_level is None else _level(file_level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()

    filters: list[logging.Filter] = [ContextFilter(), RedactFilter()]
    try:
        private_folders(log_dir)
        file_handler = _PrivateFileHandler(
            log_dir / file_name, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    except OSError as exc:  # a project folder the user cannot write, a full disk
        # mkdir says "File exists" when a file stands where a folder of the path should be
        if isinstance(exc, FileExistsError | NotADirectoryError):
            why = "a file stands where a folder of its path should be"
        elif isinstance(exc, IsADirectoryError):
            why = "it is a folder: name the file itself"
        else:
            why = exc.strerror or str(exc)
        raise RiverbedError(
            f"cannot write the log file {log_dir / file_name} ({why}); make its folder "
            "writable, with space to spare, or set logs.path in riverbed.yaml to a file that "
            "can be written"
        ) from exc
    file_handler.setLevel(file_no)
    file_handler.setFormatter(JsonFormatter())
    handlers: list[logging.Handler] = [file_handler]
    if console:
        console_handler = _StderrHandler()
        console_handler.setLevel(console_no)
        console_handler.setFormatter(ConsoleFormatter())
        handlers.append(console_handler)
    for handler in handlers:
        for f in filters:
            handler.addFilter(f)
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(min(file_no, console_no))


def _level(name: str) -> int:
    level = logging.getLevelNamesMapping().get(name.upper())
    if level is None:
        raise ValueError(f"log level '{name}' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def log_event(
    logger: logging.Logger,
    event: str,
    message: str,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log ``message`` as the named ``event`` with ``fields`` (counts, durations...)."""
    # stacklevel 2: the record's file and line are the caller's, not this helper's
    logger.log(level, message, extra={"event": event, "fields": fields}, stacklevel=2)
