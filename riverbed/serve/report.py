"""`riverbed report`: a snapshot of the dashboards as one principal sees them, in files that
open with no server and no network.

For each page (``PAGES``, the dashboards' nav order), in the output folder:

- ``<page>.json``: the page's charts, each ``chart_data`` as the principal (the semantic
  layer, through the governance gateway: that principal's row filters and masks, default
  deny), audited with path ``export``, since these rows leave the server in a file. A chart
  that needs a drill filter (one seller's returns) is left out; the pipeline health page holds
  the freshness line and the recent runs (the state store: no warehouse rows).
- ``<page>.html``: the same data inlined (a JSON script element) and drawn by plotly.js, with
  a table of each chart's rows under it (the numbers stay readable without scripts). Beside it
  ``plotly.min.js`` (the installed package's), ``report.js`` and ``riverbed.css``, copied:
  the folder is the whole report and can be mailed or archived as it is.
- ``<page>.png`` (riverbed.serve.screenshots): the live page, whatever the pages are, loaded
  by headless Chromium from the web app started in this process with a session minted for the
  principal; the HTML shows it on top. Its charts fetch their data as in any browser (audited
  as the pages' requests are). Without Chromium, one line says the PNG was skipped and how to
  get it.

Why the HTML is not the live page saved: the page fetches its data from the server by script
once it is open, so a saved copy would show empty charts, or call a server that is not there.

Files are 0600 in a folder made 0700 (riverbed.private): a report holds governed rows. A
warehouse held by a load (DuckDB's single-writer lock) is waited for: ``BUSY_TRIES`` tries,
``BUSY_PAUSE`` seconds apart, then one line saying so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from riverbed.config import Project
from riverbed.errors import RiverbedError, UsageError, first_line
from riverbed.load.warehouse import WarehouseBusy
from riverbed.private import create_private, private_folders
from riverbed.serve.context import TEMPLATES
from riverbed.serve.pages import DASHBOARDS
from riverbed.serve.semantic import CHARTS, chart_data
from riverbed.serve.static import static_files

# the page's slug -> the semantic layer's page of charts (None: pipeline health)
SEMANTIC_PAGE = {
    "product-trends": "products",
    "seller-behaviour": "sellers",
    "consumer-statistics": "consumers",
    "pipeline-health": None,
}
PAGES = [slug for slug, _ in DASHBOARDS]
FORMATS = ("html", "png")
COPIED = ("plotly.min.js", "report.js", "riverbed.css")
TABLE_ROWS = 200  # rows of a chart's table in the HTML (the JSON has them all)
BUSY_TRIES = 3  # each open already waits duckdb_warehouse.LOCK_WAIT_SECONDS (15 s)
BUSY_PAUSE = 3.0
NO_CHROMIUM = "PNG skipped: no Chromium here (apt install chromium, then run the report again)"


class ReportError(RiverbedError):
    """The report could not be made; the message is one line."""


@dataclass(frozen=True)
class Request:
    principal: str
    out: Path
    pages: tuple[str, ...] = tuple(PAGES)
    formats: tuple[str, ...] = FORMATS


def checked(project: Project, principal: str, pages: Sequence[str], formats: Sequence[str]) -> None:
    """UsageError (exit 2) for a principal, page or format that does not exist."""
    principals = project.config.governance.principals
    if principal not in principals:
        names = ", ".join(principals) or "none"
        raise UsageError(f"--as {principal}: no such principal; governance.principals: {names}")
    for page in pages:
        if page not in SEMANTIC_PAGE:
            raise UsageError(f"--page {page}: no such page; pages: {', '.join(PAGES)}")
    for kind in formats:
        if kind not in FORMATS:
            raise UsageError(f"--format {kind}: choose from {', '.join(FORMATS)}")
    if not formats:
        raise UsageError(f"--format: give at least one of {', '.join(FORMATS)}")


def make_report(
    project: Project, request: Request, say: Callable[[str], None] = lambda _line: None
) -> list[Path]:
    """Write the report of ``request``; the files written. ``say`` gets a line per page."""
    checked(project, request.principal, request.pages, request.formats)
    try:
        return _make(project, request, say)
    except OSError as exc:  # the folder cannot be made or written: one line naming it
        where = exc.filename or request.out
        raise ReportError(f"cannot write the report at {where}: {exc.strerror or exc}") from None


def _make(project: Project, request: Request, say: Callable[[str], None]) -> list[Path]:
    from riverbed.serve.screenshots import chromium, unavailable

    private_folders(request.out)
    written: list[Path] = []
    pngs: dict[str, Path] = {}
    if "png" in request.formats:
        executable = chromium()
        if executable is None:
            say(f"PNG skipped: {unavailable()}")
        else:
            pngs = _screenshots(project, request, executable, say)
            written += pngs.values()
    if "html" in request.formats:
        written += _copy_assets(request.out)
        for slug in request.pages:
            data = page_data(project, request.principal, slug)
            written += _write_page(request.out, slug, data, pngs.get(slug))
            say(f"{slug}: {request.out / (slug + '.html')} ({_summary(data)})")
    return written


def page_data(project: Project, principal: str, slug: str) -> dict[str, Any]:
    """The page's data as ``principal`` sees it: its charts, or pipeline health."""
    from riverbed.serve.semantic.health import freshness, recent_runs

    title = dict(DASHBOARDS)[slug]
    data: dict[str, Any] = {
        "page": slug,
        "title": title,
        "principal": principal,
        "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "freshness": freshness(project),
        "charts": [],
    }
    semantic = SEMANTIC_PAGE[slug]
    if semantic is None:
        runs = recent_runs(project, limit=20)
        keep = ("run_id", "status", "trigger", "started_at", "ended_at", "error")
        data["runs"] = [{k: run.get(k) for k in keep if k in run} for run in runs]
        return data
    for chart in CHARTS.values():
        if chart.page == semantic and not chart.needs:
            found = _busy_retried(
                partial(chart_data, project, principal, chart.name, path="export")
            )
            data["charts"].append(found.as_dict())
    return data


def _busy_retried(compute: Callable[[], Any]) -> Any:
    for attempt in range(BUSY_TRIES):
        try:
            return compute()
        except WarehouseBusy as exc:
            if attempt == BUSY_TRIES - 1:
                raise ReportError(
                    f"the warehouse stayed locked by a load ({first_line(exc)}); "
                    "run the report again when the load is done"
                ) from None
            time.sleep(BUSY_PAUSE)
    raise AssertionError("unreachable")


def _screenshots(
    project: Project, request: Request, executable: Path, say: Callable[[str], None]
) -> dict[str, Path]:
    from riverbed.serve.screenshots import browser, local_app, screenshot

    pngs: dict[str, Path] = {}
    try:
        with local_app(project, request.principal) as app, browser(executable, app) as page:
            for slug in request.pages:
                target = request.out / f"{slug}.png"
                _write(target, screenshot(page, app, slug))
                pngs[slug] = target
                say(f"{slug}: {target}")
    except RiverbedError:
        raise
    except Exception as exc:  # Playwright's own errors: Chromium would not start, a timeout
        say(f"PNG skipped from here on: Chromium failed ({first_line(exc)})")
    return pngs


def _copy_assets(out: Path) -> list[Path]:
    files = static_files()
    copied = []
    for name in COPIED:
        target = out / name
        _write(target, files[name].read_bytes())
        copied.append(target)
    return copied


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"])
    )


def _write_page(out: Path, slug: str, data: dict[str, Any], png: Path | None) -> list[Path]:
    text = json.dumps(data, default=str, indent=1, ensure_ascii=False)
    # inside <script>, "</" could end the element: \u003c reads back as "<"
    inline = json.dumps(data, default=str, ensure_ascii=False).replace("<", "\\u003c")
    html = (
        _environment()
        .get_template("report.html")
        .render(data=data, inline=inline, png=png.name if png else None, table_rows=TABLE_ROWS)
    )
    pages = [out / f"{slug}.json", out / f"{slug}.html"]
    _write(pages[0], text.encode())
    _write(pages[1], html.encode())
    return pages


def _write(path: Path, content: bytes) -> None:
    """``content`` into ``path``, 0600, replacing a file of an earlier report."""
    path.unlink(missing_ok=True)
    with open(create_private(path), "wb") as out:
        out.write(content)


def _summary(data: dict[str, Any]) -> str:
    if "runs" in data:
        return f"{len(data['runs'])} runs"
    rows = sum(len(chart["rows"]) for chart in data["charts"])
    return f"{len(data['charts'])} charts, {rows:,} rows"
