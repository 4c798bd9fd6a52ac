"""``/docs``: the API's reference, rendered here from its OpenAPI schema (``/openapi.json``).

FastAPI's own /docs page loads Swagger UI from a CDN, which a machine without internet cannot
reach; this page is plain HTML from the same schema: every endpoint, its method, summary,
request body and responses. Public, like the schema: it holds no data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from riverbed.serve.context import served

router = APIRouter(include_in_schema=False)


def endpoints(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per operation of the schema, in path order."""
    found = []
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "body": ", ".join(body),
                    "responses": ", ".join(sorted(operation.get("responses", {}))),
                }
            )
    return found


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    schema = request.app.openapi()
    return served(request).templates.TemplateResponse(
        request,
        "docs.html",
        {"nav": [], "principal": None, "endpoints": endpoints(schema), "info": schema["info"]},
    )
