"""The web app's static files: its own (riverbed/serve/static/: the CSS, and dashboards.js,
which draws the dashboards' charts) and plotly.js, the copy the
installed ``plotly`` package ships (``plotly/package_data/plotly.min.js``), so charts work with
no internet.

Served by name from a table made at startup, never by joining a requested path onto a
folder: ``/static/../../etc/passwd``, its percent-encoded forms and any name not in the table
are 404 without the file system being asked. A name is one path segment of plain characters.
"""

from __future__ import annotations

import mimetypes
import re
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

OWN = Path(__file__).parent / "static"
PLOTLY = "plotly.min.js"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def static_files() -> dict[str, Path]:
    """Every file served under /static/, by name."""
    files = {p.name: p for p in OWN.iterdir() if p.is_file() and _NAME.match(p.name)}
    plotly = Path(str(resources.files("plotly") / "package_data" / PLOTLY))
    if plotly.is_file():
        files[PLOTLY] = plotly
    return files


def static_router() -> APIRouter:
    files = static_files()
    router = APIRouter(include_in_schema=False)

    @router.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = files.get(name) if _NAME.match(name) else None
        if path is None:
            raise HTTPException(404, "not found")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})

    return router
