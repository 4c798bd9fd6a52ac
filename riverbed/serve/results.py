"""A logged-in principal's query, for a page, the JSON API or a CSV export: always through
``query_as`` (riverbed.serve.queries), as that principal, audited with the way it came in
(``web``, ``api`` or ``export``), so the row filters and masks of the gateway hold in every
response, the export included.

``fetch`` returns at most ``limit`` rows and says whether there were more (it asks for one
more). ``export`` streams CSV as the rows come, at most ``serve.max_export_rows``; it opens
the warehouse before the response starts, so a warehouse that a load holds, or a refused
query, is still an error status and not a broken download.

Failures become ``QueryFailed`` with an HTTP status and a message fit to show: refused by the
gateway 403, past the timeout 504, the warehouse held by a load 503 (``BUSY``), a query the
warehouse rejects 400.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from riverbed.errors import first_line
from riverbed.govern.policy import GovernError
from riverbed.load.warehouse import QueryStopped, WarehouseBusy, WarehouseError
from riverbed.serve.context import Served
from riverbed.serve.queries import query_as
from riverbed.serve.values import batch_columns, csv_cell, plain
from riverbed.state.records import AuditPath

BUSY = "the warehouse is being loaded; try again in a few seconds"


class QueryFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]  # JSON-ready values (riverbed.serve.values.plain)
    truncated: bool  # the query had more rows than were returned


@contextmanager
def answering() -> Iterator[None]:
    """The query's errors as QueryFailed."""
    try:
        yield
    except WarehouseBusy:
        raise QueryFailed(503, BUSY) from None
    except QueryStopped as exc:
        raise QueryFailed(504, f"the query ran out of time: {first_line(exc)}") from None
    except WarehouseError as exc:
        raise QueryFailed(400, first_line(exc)) from None
    except GovernError as exc:
        raise QueryFailed(403, first_line(exc)) from None


def _batches(
    served: Served, principal: str, sql: str, path: AuditPath, limit: int
) -> Iterator[Any]:
    return query_as(
        served.project,
        principal,
        sql,
        timeout=served.settings.query_timeout_seconds,
        limit=limit,
        path=path,
        lock_wait=served.settings.warehouse_wait_seconds,
    )


def fetch(served: Served, principal: str, sql: str, path: AuditPath, limit: int) -> Result:
    """At most ``limit`` rows of ``sql`` as ``principal`` sees them."""
    columns: list[str] = []
    rows: list[list[Any]] = []
    with answering():
        for batch in _batches(served, principal, sql, path, limit + 1):
            columns = batch.schema.names
            rows.extend([plain(v) for v in row] for row in zip(*batch_columns(batch)))
    return Result(columns, rows[:limit], len(rows) > limit)


def export(served: Served, principal: str, sql: str) -> Iterator[str]:
    """``sql``'s rows as CSV text (a header line, then lines as batches come), its query
    already started: QueryFailed here, not while the response streams."""
    batches = _batches(served, principal, sql, "export", served.settings.max_export_rows)
    with answering():
        first = next(batches, None)
    return _csv(first, batches)


def _csv(first: Any, batches: Iterator[Any]) -> Iterator[str]:
    if first is None:
        return
    yield ",".join(csv_cell(name) for name in first.schema.names) + "\n"
    for batch in itertools.chain([first], batches):
        yield "".join(",".join(map(csv_cell, row)) + "\n" for row in zip(*batch_columns(batch)))
