"""The audit trail's two entry points: ``record_decision``, which the gateway calls once per
read it allowed or denied, and ``record_change``, which the governance commands call once per
change they made (``govern apply``, ``keys rotate``, ``forget``). Both append to the state
store's hash-chained log (riverbed.state.store.AuditLog); `riverbed audit` reads and verifies
it.

What the log never holds is a secret of ours. A query's SQL is kept as the principal wrote
it, a literal that looks like a password included: it is their query, the thing an auditor
needs to see, not a credential Riverbed keeps. A change's ``detail`` is Riverbed's own words,
and must not carry key material, passwords or tokens: name a key by its id (``key_id``),
never by its bytes. ``record_change`` refuses a detail field named like a secret
(``password``, ``token``, ``master_key``, ...) or holding bytes, with a ValueError (a bug in
the caller, to be fixed there), and masks in its texts whatever the logs mask (the config's
registered secrets, DSN passwords) in case one slipped into a message.

An append that fails (a full disk) raises: the caller decides; the gateway should refuse a
read it cannot record rather than serve it unaudited.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, get_args

from riverbed.observe.logs import redact_value
from riverbed.state.records import AuditEntry, AuditPath, AuditRecord
from riverbed.state.store import StateStore

# the ways a principal reads the warehouse; ``govern`` is the path of a change
READ_PATHS: tuple[AuditPath, ...] = tuple(p for p in get_args(AuditPath) if p != "govern")

# a detail field named like one of these holds a secret; ``key_id`` and ``key`` (a data
# subject's key, as `forget customers 42` names it) do not
_SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|secret|token|credential|salt"
    r"|(private|master|data|wrapped|encryption|signing|api|access)_?keys?$|key_?material",
    re.IGNORECASE,
)


def record_decision(
    store: StateStore,
    *,
    principal: str,
    path: AuditPath,
    sql: str,
    tables: Iterable[str],
    allowed: bool,
    reason: str | None,
    rows: int | None,
    seconds: float,
) -> AuditRecord:
    """One gateway decision: ``principal`` asked ``sql`` by ``path`` (cli, api, web,
    export), naming ``tables``; it was ``allowed`` or not and why (``reason``), returned
    ``rows`` (None when denied) in ``seconds``. Its time is when the query was asked: now,
    less ``seconds``."""
    if path not in READ_PATHS:
        raise ValueError(f"audit path {path!r}: a read comes by {', '.join(READ_PATHS)}")
    return store.audit.append(
        AuditEntry(
            ts=time.time() - seconds,
            principal=principal,
            path=path,
            action="query",
            sql=sql,
            tables=tuple(tables),
            allowed=allowed,
            reason=reason,
            rows=rows,
            seconds=seconds,
        )
    )


def record_change(
    store: StateStore, *, principal: str, action: str, detail: Mapping[str, Any]
) -> AuditRecord:
    """One governance change ``action`` (apply, rotate, forget, ...) made by ``principal``
    (the user running the command), with what it changed in ``detail`` (JSON): never a
    secret (see the module's docstring)."""
    if not action or action == "query":
        raise ValueError(f"audit action {action!r}: a change is apply, rotate, forget, ...")
    _refuse_secrets(detail, "detail")
    return store.audit.append(
        AuditEntry(
            ts=time.time(),
            principal=principal,
            path="govern",
            action=action,
            detail=redact_value(detail),
        )
    )


def _refuse_secrets(value: Any, where: str) -> None:
    """A ValueError naming the first field of ``value`` that is named like a secret or holds
    bytes (key material is bytes), at any depth."""
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"audit {where} holds bytes: record a key's id, never its material")
    if isinstance(value, Mapping):
        for name, inner in value.items():
            if _SECRET_NAME.search(str(name)):
                raise ValueError(
                    f"audit {where}.{name}: named like a secret; the audit trail never holds "
                    "one (record a key's id, not the key)"
                )
            _refuse_secrets(inner, f"{where}.{name}")
    elif isinstance(value, list | tuple | set | frozenset):
        for i, inner in enumerate(value):
            _refuse_secrets(inner, f"{where}[{i}]")
