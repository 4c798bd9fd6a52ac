"""The registry of the dashboards' charts, ``CHARTS``, and ``chart_data``, the one function the
pages, the JSON API and exports call for a chart's numbers.

The charts live with their page (products.py, sellers.py, consumers.py), each built from the
measures of measures.py; here they are gathered by name. ``chart_data`` validates the filters
(FilterError), finds the chart (ChartError) and computes it as the principal: every query goes
through the governance gateway, so row filters, masks and default deny hold and the audit trail
records each one with ``path`` (``api``, ``web``, ``export``).

The as-of date (the day a partial current month ends; see filters.fair_windows) is, in order:
the ``as_of`` argument, the ``date_to`` filter, today in UTC.

A ``limit`` (1 .. MAX_LIMIT) keeps a chart's first rows only, and ``meta`` states it with
the rows there are (``limit``, ``rows_total``). A chart that ranks many rows cuts them
before it reads anything more (customer_refunds: the most refunded customers, their personal
columns read for those alone); any other is cut after it is computed. A page asks for a chart's
``page_limit`` rows; an export and a call without ``limit`` get every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from riverbed.config import Project
from riverbed.govern.gateway import Refused
from riverbed.serve.semantic import consumers, products, sellers
from riverbed.serve.semantic.chart import Chart, ChartData, ChartError, Context, NoSemanticLayer
from riverbed.serve.semantic.filters import Filters, today_utc
from riverbed.state.records import AuditPath

MAX_LIMIT = 100_000

CHARTS: dict[str, Chart] = {
    chart.name: chart for chart in (*products.CHARTS, *sellers.CHARTS, *consumers.CHARTS)
}


def chart_data(
    project: Project,
    principal: str,
    name: str,
    filters: Mapping[str, Any] | Filters | None = None,
    *,
    path: AuditPath = "api",
    as_of: date | None = None,
    extracts: bool = True,
    limit: int | str | None = None,
) -> ChartData:
    """Chart ``name``'s data as ``principal`` may see it, under ``filters`` (see Filters);
    from the extract where it can answer (``extracts=False``: always live); its first
    ``limit`` rows only when given (a whole number 1 .. MAX_LIMIT, else ChartError)."""
    chart = CHARTS.get(name)
    if chart is None:
        raise ChartError(f"no chart {name!r}; charts: {', '.join(CHARTS)}")
    parsed = Filters.parse(filters)
    most = parse_limit(limit)
    missing = [f for f in chart.needs if getattr(parsed, f) is None]
    if missing:
        raise ChartError(f"chart {name} needs the filter {', '.join(missing)}")
    day = as_of or parsed.date_to or today_utc()
    context = Context(project, principal, parsed, day, path, extracts=extracts, limit=most)
    try:
        rows = chart.compute(context)
    except Refused:
        # the gateway refuses a table that does not exist as one not granted (default deny
        # tells no one what exists); whether the shop's tables exist at all is the same for
        # every reader, so that is said plainly
        if missing := missing_tables(project):
            raise NoSemanticLayer(
                f"chart {name} reads the demo shop's tables, and this warehouse has no "
                f"{', '.join(missing)}: the product, seller and consumer dashboards need the "
                "shop's schema (README, Dashboards); pipeline health works on any schema"
            ) from None
        raise
    if most is not None and "limit" not in context.meta:  # not ranked in its query: cut here
        context.meta |= {"limit": most, "rows_total": len(rows)}
        rows = rows[:most]
    meta = {"filters": parsed.as_dict(), "as_of": day.isoformat(), **context.meta}
    return ChartData(name, chart.title, list(chart.columns), rows, meta)


def missing_tables(project: Project) -> list[str]:
    """The tables the charts' measures read (datasets.ALIASES) the warehouse does not have."""
    from riverbed.load.warehouse import open_warehouse
    from riverbed.serve.extracts.datasets import ALIASES
    from riverbed.serve.queries import read_catalog

    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        tables = read_catalog(warehouse).tables
    finally:
        warehouse.close()
    return sorted(set(ALIASES.values()) - set(tables))


def parse_limit(value: int | str | None) -> int | None:
    """A row limit as given (an API's text, a caller's int), checked; None: no limit."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or len(text) > 7:
        raise ChartError(f"limit = {text[:40]!r}: not a whole number of rows; use 1 .. {MAX_LIMIT}")
    if not 1 <= int(text) <= MAX_LIMIT:
        raise ChartError(f"limit = {int(text)}: use 1 .. {MAX_LIMIT} rows")
    return int(text)


def page_charts(page: str) -> list[Chart]:
    """The charts of ``page`` (products, sellers, consumers), in the order they show."""
    return [c for c in CHARTS.values() if c.page == page]
