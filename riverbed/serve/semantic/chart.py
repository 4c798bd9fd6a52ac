"""What a chart is and what it hands back: ``Chart`` (a name, its page, a title and the function
that computes it), ``Context`` (the reader, the validated filters, the as-of date, and the one
way a chart reads the warehouse: ``Context.rows``, through the governance gateway) and
``ChartData``, the result every page, API response and export is made of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import repeat
from typing import Any, Literal

import pyarrow as pa
from sqlglot import exp

from riverbed.config import Project
from riverbed.errors import UsageError
from riverbed.serve.queries import query_as
from riverbed.serve.semantic.filters import Filters
from riverbed.serve.semantic.measures import (
    MEASURES,
    RATES,
    RegionOf,
    Relation,
    build,
    conditions,
    month_label,
    numbers,
    ratio,
)
from riverbed.state.records import AuditPath

Page = Literal["products", "sellers", "consumers"]


class ChartError(UsageError):
    """No chart by that name, or a chart asked for without what it needs."""


class NoSemanticLayer(ChartError):
    """The warehouse lacks tables the charts' measures read: a schema other than the shop's."""


@dataclass(frozen=True)
class ChartData:
    """A chart's rows (dicts keyed by ``columns``) and what they mean: ``meta`` holds the
    filters applied, the as-of date and, for comparisons, the windows compared."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "meta": self.meta,
        }


@dataclass
class Context:
    """One chart request: who asks, narrowed how, as of when."""

    project: Project
    principal: str
    filters: Filters
    as_of: date
    path: AuditPath = "api"
    meta: dict[str, Any] = field(default_factory=dict)
    extracts: bool = True  # answer from the extract where it can (riverbed.serve.extracts)
    limit: int | None = None  # rows at most, for a chart that ranks its rows (else all)

    @property
    def dialect(self) -> str:
        return self.project.config.warehouse.engine

    def rows(self, select: exp.Expr) -> list[dict[str, Any]]:
        """``select``'s rows as dicts (``arrow``'s, one per row)."""
        return self.arrow(select).to_pylist()

    def arrow(self, select: exp.Expr, *, lookup: bool = False) -> pa.Table:
        """``select``'s rows, run as the principal through the gateway (governed, audited):
        from the extract when it can answer them, else live from the warehouse; ``meta``'s
        ``answered_from`` says which (``live`` when any query of the chart was). ``lookup``:
        attributes of rows already counted (a customer's personal columns), always live,
        which ``answered_from`` does not count (it says where the numbers came from):
        ``lookup_from`` says it, for a reader that must know the chart may wait on a load."""
        if not lookup:
            answered = self.from_extract(select)
            if answered is not None:
                return answered
        self.meta["lookup_from" if lookup else "answered_from"] = "live"
        sql = select.sql(dialect=self.dialect)
        batches = list(query_as(self.project, self.principal, sql, path=self.path))
        if not batches:  # no batch, no schema: the query's columns with no row
            names = select.named_selects if isinstance(select, exp.Query) else []
            return pa.table({name: pa.array([]) for name in names})
        # a PostgreSQL warehouse's batches are typed each by its own values (a batch of NULLs
        # has type null): their types unified, else the rows taken as values
        tables = [pa.Table.from_batches([batch]) for batch in batches]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.Table.from_pylist([row for table in tables for row in table.to_pylist()])

    def from_extract(self, select: exp.Expr) -> pa.Table | None:
        """``select``'s rows from the extract (governed, audited), or None when it cannot
        answer them (or ``extracts`` is off): for a query worth running there only (a
        ranking cut in its query, which the live warehouse would sort whole)."""
        if not self.extracts:
            return None
        from riverbed.serve.extracts.answer import answer  # it imports this package

        answered = answer(self.project, self.principal, select, self.path)
        if answered is not None:
            self.meta.setdefault("answered_from", "extract")
        return answered

    def table(
        self,
        relation: Relation,
        dimensions: Sequence[str],
        measures: Sequence[str],
        *,
        region_of: RegionOf = "customer",
        filters: Filters | None = None,
        where: Sequence[exp.Expr] = (),
    ) -> list[dict[str, Any]]:
        """``measures`` (and any of RATES) by ``dimensions`` over ``relation`` under the
        request's filters, ordered by the dimensions: months as 'YYYY-MM', counts as ints,
        money as Decimal, rates as floats (None over no items)."""
        rates = [m for m in measures if m in RATES]
        needed = [m for m in measures if m in MEASURES]
        needed = list(dict.fromkeys([*needed, *(part for r in rates for part in RATES[r])]))
        select = build(
            relation,
            dimensions,
            needed,
            [*conditions(relation, filters or self.filters, region_of), *where],
            order=[str(i + 1) for i in range(len(dimensions))],
        )
        # column by column, each converted once (a page's table runs to tens of thousands
        # of rows: per-cell work there is most of a chart's time)
        table = self.arrow(select)
        values = {m: numbers(table.column(m), m) for m in needed}
        shown = {d: _dimension_values(table.column(d), d) for d in dimensions}
        shown |= {m: values[m] for m in measures if m in values}
        for rate in rates:
            parts = zip(values[RATES[rate][0]], values[RATES[rate][1]], strict=True)
            shown[rate] = [ratio(numerator, denominator) for numerator, denominator in parts]
        # the rows made by map, not a comprehension: a third less time over 25,000 rows
        return list(map(dict, map(zip, repeat(list(shown)), zip(*shown.values()))))


def _dimension_values(column: pa.ChunkedArray, dimension: str) -> list[Any]:
    found = column.to_pylist()
    if dimension != "month":
        return found
    labels = {key: month_label(key) for key in set(found)}  # a few dozen months
    return [labels[key] for key in found]


Compute = Callable[[Context], list[dict[str, Any]]]


@dataclass(frozen=True)
class Chart:
    """A named chart of a page: ``compute`` returns its rows, with ``columns`` in order."""

    name: str
    page: Page
    title: str
    columns: tuple[str, ...]
    compute: Compute
    needs: tuple[str, ...] = ()  # filters it cannot do without (a drill's seller)
    page_limit: int | None = None  # the rows its page asks for (``limit``); None: all
