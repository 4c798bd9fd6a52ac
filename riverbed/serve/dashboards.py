"""What the four dashboard pages are made of on the server: their filters, read from the URL
(GET parameters, so a URL is a shareable view), the data-freshness line and the words of the
fair comparison. The numbers themselves are not here: the page holds ``<figure>`` elements
naming their charts in ``data-`` attributes, and riverbed/serve/static/dashboards.js fetches
each from ``/api/charts/<name>`` (riverbed.serve.charts_api) with the page's filters and draws
it with plotly.js. No script is inline: the Content-Security-Policy forbids it.

A page's filters are validated as the API validates them (Filters.parse): a bad value is shown
on the page with the form to fix it (status 400), and no chart is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from riverbed.config import Project
from riverbed.serve.semantic import CHARTS, FilterError, Filters
from riverbed.serve.semantic.filters import NAMES, Window, fair_windows, today_utc
from riverbed.serve.semantic.health import freshness

# the filters a page's form shows; the others (a drill's seller or product) ride along hidden
FORM_FILTERS = ("date_from", "date_to", "category", "region")


@dataclass(frozen=True)
class PageView:
    """One request for a dashboard: its filters (as the URL gave them, validated), the query
    string the charts are fetched with, and the lines the page states in words."""

    filters: dict[str, str]
    query: str
    error: str | None
    freshness: str
    comparison: str

    def template_values(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "hidden": {k: v for k, v in self.filters.items() if k not in FORM_FILTERS},
            "query": self.query,
            "filter_error": self.error,
            "freshness": self.freshness,
            "comparison": self.comparison,
            # each filter's "back" link: the same view without it
            "without": {name: self.query_without(name) for name in self.filters},
            # the rows a chart's figure asks for (its table shows the top of a ranking)
            "page_limits": {c.name: c.page_limit for c in CHARTS.values() if c.page_limit},
        }

    def query_without(self, name: str) -> str:
        rest = urlencode({k: v for k, v in self.filters.items() if k != name})
        return f"?{rest}" if rest else ""


def page_view(project: Project, params: Mapping[str, str], now: float | None = None) -> PageView:
    """The view ``params`` (a request's query string) asks for."""
    given = {k: v for k, v in params.items() if k in NAMES and v != ""}
    error = None
    try:
        parsed = Filters.parse(given)
    except FilterError as exc:
        error, parsed = str(exc), Filters()
    unknown = sorted(set(params) - set(NAMES))
    if unknown and error is None:
        error = f"unknown filter {unknown[0]!r}; filters: {', '.join(NAMES)}"
    as_of = parsed.date_to or today_utc()
    return PageView(
        filters=given,
        query=urlencode(given),
        error=error,
        freshness=freshness_line(freshness(project, now)),
        comparison=comparison_words(*fair_windows(as_of)),
    )


def freshness_line(found: Mapping[str, Any]) -> str:
    seconds = found.get("seconds_ago")
    if seconds is None:
        return "No successful run yet: the charts show what the warehouse holds."
    line = f"Data as of the last successful run, {int(seconds)} s ago"
    if seconds >= 120:
        line += f" (about {_about(seconds)})"
    return line + "."


def _about(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return f"{int(seconds)} seconds ago"  # pragma: no cover - only called from 120 s


def comparison_words(current: Window, previous: Window) -> str:
    """ "1–6 Dec 2026 vs 1–6 Nov 2026": the fair comparison of a partial month, in words."""
    return f"{_days(current)} vs {_days(previous)}"


def _days(window: Window) -> str:
    return f"{window.first.day}–{window.last.day} {_month(window.last)}"


def _month(day: date) -> str:
    return day.strftime("%b %Y")
