"""The JSON API: ``/api/me``, ``/api/query`` and ``/api/query.csv``.

Authenticated by ``Authorization: Bearer <token>`` (a principal's ``token`` in the policy) or
by the browser's session; with the session, every POST carries its CSRF token in the
``X-CSRF-Token`` header (or ``csrf_token`` form field). Each call runs through the gateway as
the caller: ``/api/query`` audited as ``api``, ``/api/query.csv`` as ``export`` (the same
filters and masks: it is the same gateway), ``/api/me`` as ``api``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from riverbed.govern.gateway import LISTING
from riverbed.serve.context import Caller, caller, checked_csrf, served
from riverbed.serve.results import export, fetch

router = APIRouter(prefix="/api", tags=["api"])
Who = Annotated[Caller, Depends(caller)]


class QueryRequest(BaseModel):
    sql: str = Field(min_length=1, description="One read-only SQL statement.")
    limit: int | None = Field(None, ge=1, description="Rows at most (serve.max_rows caps it).")


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="The query had more rows than returned.")


class Me(BaseModel):
    principal: str
    tables: dict[str, list[str]] = Field(description="Each readable table and its columns.")


@router.get("/me", response_model=Me, summary="Who you are and what you may read")
def me(request: Request, who: Who) -> Me:
    result = fetch(
        served(request),
        who.principal,
        f"select table_name, column_name from {LISTING}",
        "api",
        limit=100_000,
    )
    tables: dict[str, list[str]] = {}
    for table, column in result.rows:
        tables.setdefault(str(table), []).append(str(column))
    return Me(principal=who.principal, tables=tables)


@router.post("/query", response_model=QueryResult, summary="A governed query's rows as JSON")
def query(request: Request, who: Who, body: QueryRequest) -> QueryResult:
    checked_csrf(request, who)
    context = served(request)
    cap = context.settings.max_rows
    result = fetch(context, who.principal, body.sql, "api", min(body.limit or cap, cap))
    return QueryResult(columns=result.columns, rows=result.rows, truncated=result.truncated)


@router.post(
    "/query.csv",
    summary="A governed query's rows as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def query_csv(request: Request, who: Who) -> StreamingResponse:
    """The body is JSON ``{"sql": ...}`` or a form with ``sql`` (and ``csrf_token``)."""
    token: Any = None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            sql = (await request.json()).get("sql")
        except (ValueError, AttributeError):
            sql = None
    else:
        form = await request.form()
        sql, token = form.get("sql"), form.get("csrf_token")
    checked_csrf(request, who, str(token) if token is not None else None)
    if not isinstance(sql, str) or not sql.strip():
        raise HTTPException(422, "give the query as sql")
    # the warehouse opens in a worker thread: a load's lock must not stall the event loop
    rows = await run_in_threadpool(export, served(request), who.principal, sql)
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="query.csv"'},
    )
