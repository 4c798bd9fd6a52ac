"""The dashboards' data as JSON and CSV: ``/api/charts`` (every chart: name, title, page),
``/api/charts/{name}`` (one chart's data), ``/api/charts/{name}.csv`` (the same rows as a CSV
download), ``/api/choices/{name}`` (the values a page's filter offers, semantic.choices) and
``/api/health/...`` (the pipeline's health, for its page).

Every chart comes from ``chart_data`` (riverbed.serve.semantic), the one function the pages
draw from too, run as the caller (session or bearer token) through the governance gateway:
the JSON is audited as ``api``, the CSV as ``export``, and both hold the same row filters and
masks, because they are the same call. The filters are the query string (``date_from``,
``date_to``, ``category``, ``region``, ``seller``, ``product``, ``customer``): an unknown one or
a bad value is 400 with the FilterError's one line; an unknown chart is 404. ``limit`` keeps
the chart's first rows only (1 .. 100,000; ``meta`` states it and the rows there are): a page
asks for its chart's ``page_limit`` (/api/charts lists it); without it every row comes.

Values are written as every other output writes them (riverbed.serve.values.plain): integers
and floats (counts, rates, growth in percent) as JSON numbers, decimals (money) as strings
holding their exact digits ("1234.50": a JSON number would pass through a binary float in
most parsers), dates and months as ISO text ("2026-12-07", "2026-12"), NULL as null. The CSV
writes money bare, as numbers.

The health endpoints read the state store (riverbed.serve.semantic.health), not the warehouse:
they hold no warehouse rows, so any logged-in principal may read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from riverbed.errors import RiverbedError, first_line
from riverbed.serve.context import Caller, caller, served
from riverbed.serve.results import answering
from riverbed.serve.semantic import CHARTS, ChartData, ChartError, FilterError, chart_data, health
from riverbed.serve.semantic.chart import NoSemanticLayer
from riverbed.serve.semantic.choices import CHOICES, choices
from riverbed.serve.values import csv_cell, plain
from riverbed.state.records import AuditPath

router = APIRouter(prefix="/api", tags=["charts"])
# the state store's readers: no warehouse rows, so a login is all they need
health_router = APIRouter(prefix="/api/health", tags=["health"], dependencies=[Depends(caller)])
LoggedIn = [Depends(caller)]
Who = Annotated[Caller, Depends(caller)]
PAGES = {
    "products": "product-trends",
    "sellers": "seller-behaviour",
    "consumers": "consumer-statistics",
}


class ChartInfo(BaseModel):
    name: str
    title: str
    page: str = Field(description="The dashboard that shows it (its path).")
    needs: list[str] = Field(description="Filters it cannot do without (a drill's seller).")
    page_limit: int | None = Field(
        None, description="The rows its page asks for (limit); null: all of them."
    )


class ChartRows(BaseModel):
    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = Field(
        description="One object per row, keyed by columns; money as exact decimal strings."
    )
    meta: dict[str, Any] = Field(
        description="The filters applied, the as-of date, compared windows, top movers."
    )


def chart_filters(
    request: Request,
    date_from: Annotated[str | None, Query(description="First business day, YYYY-MM-DD")] = None,
    date_to: Annotated[
        str | None, Query(description="Last business day (and the as-of date), YYYY-MM-DD")
    ] = None,
    category: Annotated[str | None, Query(max_length=200)] = None,
    region: Annotated[
        str | None,
        Query(max_length=200, description="The seller's on seller charts, else the customer's"),
    ] = None,
    seller: Annotated[str | None, Query(description="A seller id (the returns drill)")] = None,
    product: Annotated[str | None, Query(description="A product id")] = None,
    customer: Annotated[str | None, Query(description="A customer id")] = None,
) -> dict[str, str]:
    """A chart's filters from the query string: declared one by one for the schema, and any
    other name passed on too, so that Filters refuses it (400) rather than it being ignored."""
    declared = {
        "date_from": date_from,
        "date_to": date_to,
        "category": category,
        "region": region,
        "seller": seller,
        "product": product,
        "customer": customer,
    }
    given = {k: v for k, v in declared.items() if v is not None}
    others = {k: v for k, v in request.query_params.items() if k not in declared}
    return given | {k: v for k, v in others.items() if k != "limit"}  # not a filter: Limit


Filtered = Annotated[dict[str, str], Depends(chart_filters)]
# validated by chart_data (400 with its line, as a filter's), so taken here as text
Limit = Annotated[
    str | None, Query(description="The first rows only (1 .. 100000): the top of a ranking")
]


def governed_chart(
    request: Request,
    who: Caller,
    name: str,
    given: dict[str, str],
    path: AuditPath,
    limit: str | None = None,
) -> ChartData:
    """Chart ``name`` as ``who`` sees it; 404, 400 or the query's QueryFailed status."""
    if name not in CHARTS:
        raise HTTPException(404, f"no chart {name!r}; GET /api/charts lists them")
    try:
        with answering():
            return chart_data(
                served(request).project, who.principal, name, given, path=path, limit=limit
            )
    except NoSemanticLayer as exc:
        raise HTTPException(404, first_line(exc)) from None
    except (FilterError, ChartError) as exc:
        raise HTTPException(400, first_line(exc)) from None


@router.get(
    "/charts",
    response_model=list[ChartInfo],
    summary="Every dashboard chart",
    dependencies=LoggedIn,
)
def charts() -> list[ChartInfo]:
    return [
        ChartInfo(
            name=c.name,
            title=c.title,
            page=PAGES[c.page],
            needs=list(c.needs),
            page_limit=c.page_limit,
        )
        for c in CHARTS.values()
    ]


# before /charts/{name}: that pattern would take "name.csv" as a chart's name
@router.get(
    "/charts/{name}.csv",
    summary="A chart's rows as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 400: {}, 404: {}},
)
def chart_csv(
    request: Request, who: Who, name: str, filters: Filtered, limit: Limit = None
) -> StreamingResponse:
    """The rows of ``GET /api/charts/{name}`` under the same filters and masks, audited as
    ``export``: every row unless ``limit`` is given."""
    data = governed_chart(request, who, name, filters, "export", limit)
    return StreamingResponse(
        _csv(data),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{data.name}.csv"'},
    )


def _csv(data: ChartData) -> Iterator[str]:
    yield ",".join(csv_cell(c) for c in data.columns) + "\n"
    for row in data.rows:
        yield ",".join(csv_cell(row.get(c)) for c in data.columns) + "\n"


@router.get(
    "/charts/{name}",
    response_model=ChartRows,
    summary="A chart's data, governed",
    responses={400: {}, 404: {}},
)
def chart(
    request: Request, who: Who, name: str, filters: Filtered, limit: Limit = None
) -> ChartRows:
    data = governed_chart(request, who, name, filters, "api", limit)
    return ChartRows(
        name=data.name,
        title=data.title,
        columns=data.columns,
        rows=[{k: plain(v) for k, v in row.items()} for row in data.rows],
        meta=plain(data.meta),
    )


@router.get(
    "/choices/{name}",
    summary="The values a dashboard filter offers, as the caller may see them",
    responses={404: {}},
)
def filter_choices(request: Request, who: Who, name: str) -> dict[str, Any]:
    """Every value of the dimension ``name`` (customer_region) the caller may see, from its
    current rows through the gateway, audited as ``api``: what the page's filter lists."""
    if name not in CHOICES:
        raise HTTPException(404, f"no choices {name!r}; choices: {', '.join(CHOICES)}")
    with answering():
        values = choices(served(request).project, who.principal, name, "api")
    return {"name": name, "values": values}


@health_router.get("/freshness", summary="When the last successful run ended, how long ago")
def freshness(request: Request) -> dict[str, Any]:
    return health.freshness(served(request).project)


@health_router.get("/status", summary="What riverbed status shows")
def status(request: Request) -> dict[str, Any]:
    return plain(health.pipeline_status(served(request).project))  # type: ignore[no-any-return]


@health_router.get("/runs", summary="The latest runs, newest first, rows per state")
def runs(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict[str, Any]]:
    return plain(health.recent_runs(served(request).project, limit))  # type: ignore[no-any-return]


@health_router.get("/runs/{run_id}", summary="One run and its state timeline")
def run(request: Request, run_id: str) -> dict[str, Any]:
    try:
        found = health.run_timeline(served(request).project, run_id)
    except RiverbedError as exc:  # no such run, or a tail naming several: it says which
        raise HTTPException(404, first_line(exc)) from None
    return plain(found)  # type: ignore[no-any-return]


@health_router.get("/quality", summary="Each quality rule's results per batch, with quarantine")
def quality(
    request: Request,
    table: Annotated[str | None, Query(max_length=200)] = None,
    batches: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    return plain(health.quality_over_time(served(request).project, table, batches))  # type: ignore[no-any-return]


@health_router.get("/lag", summary="The capture lag over the last hours")
def lag(
    request: Request, seconds: Annotated[float, Query(gt=0, le=30 * 86400)] = 3600
) -> list[dict[str, Any]]:
    return health.capture_lag_series(served(request).project, seconds)


@health_router.get("/alarms", summary="Each alarm's latest state")
def alarms(request: Request) -> list[dict[str, Any]]:
    return plain(health.alarm_states(served(request).project))  # type: ignore[no-any-return]
