"""The registry of the dashboards' charts, ``CHARTS``, and ``chart_data``, the one function the
pages, the JSON API and exports call for a chart's numbers.

The charts live with their page (products.py, sellers.py, consumers.py), each built from the
measures of measures.py; here they are gathered by name. ``chart_data`` validates the filters
(FilterError), finds the chart (ChartError) and computes it as the principal: every query goes
through the governance gateway, so row filters, masks and default deny hold and the audit trail
records each one with ``path`` (``api``, ``web``, ``export``).

The as-of date (the day a partial current month ends; see filters.fair_windows) is, in order:
the ``as_of`` argument, the ``date_to`` filter, today in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from riverbed.config import Project
from riverbed.serve.semantic import consumers, products, sellers
from riverbed.serve.semantic.chart import Chart, ChartData, ChartError, Context
from riverbed.serve.semantic.filters import Filters, today_utc
from riverbed.state.records import AuditPath

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
) -> ChartData:
    """Chart ``name``'s data as ``principal`` may see it, under ``filters`` (see Filters);
    from the extract where it can answer (``extracts=False``: always live)."""
    chart = CHARTS.get(name)
    if chart is None:
        raise ChartError(f"no chart {name!r}; charts: {', '.join(CHARTS)}")
    parsed = Filters.parse(filters)
    missing = [f for f in chart.needs if getattr(parsed, f) is None]
    if missing:
        raise ChartError(f"chart {name} needs the filter {', '.join(missing)}")
    day = as_of or parsed.date_to or today_utc()
    context = Context(project, principal, parsed, day, path, extracts=extracts)
    rows = chart.compute(context)
    meta = {"filters": parsed.as_dict(), "as_of": day.isoformat(), **context.meta}
    return ChartData(name, chart.title, list(chart.columns), rows, meta)


def page_charts(page: str) -> list[Chart]:
    """The charts of ``page`` (products, sellers, consumers), in the order they show."""
    return [c for c in CHARTS.values() if c.page == page]
