"""`riverbed report`: a snapshot of the dashboards as one principal sees them
(riverbed.serve.report): HTML with its data, and PNG through headless Chromium when there is
one. A local command for whoever runs Riverbed on this machine: no password asked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riverbed.cli.common import ConfigOption, app, open_project, say_wrapped, start_logging


@app.command(short_help="A dashboard snapshot (HTML, PNG) as a principal sees it.")
def report(
    principal: Annotated[
        str, typer.Option("--as", metavar="PRINCIPAL", help="Whose rows and masks.")
    ],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write into.")],
    page: Annotated[
        list[str] | None,
        typer.Option(
            "--page",
            metavar="PAGE",
            help="A page (product-trends, seller-behaviour, consumer-statistics, "
            "pipeline-health); repeat it for more. Default: every page.",
        ),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", metavar="FORMATS", help="html, png or html,png.")
    ] = "html,png",
    quiet: Annotated[bool, typer.Option("--quiet", help="Errors only.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write a snapshot of the dashboards as PRINCIPAL sees them (that principal's row
    filters and masks, as in the web app) into DIR (made 0700, files 0600): per page an HTML
    file that opens with no server and no network, its data as JSON, and a PNG of the page
    through headless Chromium when it is installed. Every chart's query is audited as the
    principal with path export.

    Example: `riverbed report --as eu_analyst --out reports/eu`
    """
    from riverbed.serve.report import PAGES, Request, checked, make_report

    project = open_project(config)
    kinds = tuple(kind.strip() for kind in formats.split(",") if kind.strip())
    pages = tuple(page or PAGES)
    checked(project, principal, pages, kinds)
    start_logging(project, quiet=quiet)
    say = (lambda _line: None) if quiet else (lambda line: say_wrapped(line, highlight=False))
    written = make_report(project, Request(principal, out, pages, kinds), say)
    say(f"report as {principal}: {len(written)} files in {out}")
