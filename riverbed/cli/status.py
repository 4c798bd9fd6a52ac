"""`riverbed status`: capture lag, the lake, quality results, runs and alarms at a glance."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from riverbed.cli.common import (
    ConfigOption,
    app,
    console,
    format_bytes,
    labelled,
    open_project,
    plural,
    print_table,
)


@app.command(short_help="Capture lag, the lake, quality results, runs and alarms.")
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Capture lag, the lake's tables, quality results and unreadable files, at a glance.

    Example: `riverbed status`
    """
    from riverbed.capture.lag import measure_lag
    from riverbed.observe.status import gather

    project = open_project(config)
    report = gather(project, lambda store: measure_lag(project, store)[0])
    if as_json:
        print(json.dumps(report))
        return
    cap = report["capture"]
    labelled("source", escape(f"{report['source']['dsn']} ({report['source']['state']})"))
    if cap["slot"] is None:
        labelled("capture", "not started (run `riverbed capture --once`)")
    elif cap["slot_replaced"]:
        labelled(
            "capture",
            f"slot {cap['slot']} replaced (another project reads it; the lake is at "
            f"{cap['position']}): `riverbed capture --once` explains",
        )
    else:
        lag = cap["lag_bytes"]
        labelled(
            "capture",
            f"slot {cap['slot']} at {cap['position']}, lag "
            f"{_lag_unknown(report) if lag is None else format_bytes(lag)}"
            + (f" / {cap['lag_seconds']:.1f} s" if cap["lag_seconds"] is not None else "")
            + f", {cap['files']:,} raw files, {cap['rows']:,} rows",
        )
    if report["lake"]:
        _print_lake(report["lake"])
    if report["quality"]:
        _print_quality(report["quality"])
    for bad in report["bad_files"]:
        console.print(
            f"[yellow]unreadable raw file {bad['path']} set aside as {bad['moved_to']}: "
            f"{escape(bad['reason'])}[/yellow]"
        )
    _print_runs(report)
    for alarm in report["alarms"]:
        color = {"OK": "green", "ALARM": "red"}.get(alarm["state"], "yellow")
        labelled(
            "alarm",
            f"{escape(alarm['alarm'])}: [{color}]{alarm['state']}[/{color}] "
            f"{escape(alarm['reason'])}",
        )


def _print_lake(lake: dict[str, dict[str, Any]]) -> None:
    table = Table("table", "raw files", "rows", "schema", "last landed")
    lines = []
    for name, info in lake.items():
        landed = info["landed_at"] or "-"
        table.add_row(
            name, f"{info['files']:,}", f"{info['rows']:,}", str(info["schema_version"]), landed
        )
        lines.append(
            (
                "lake",
                escape(
                    f"{name}: {plural(info['files'], 'raw file')}, {plural(info['rows'], 'row')}"
                    f", schema {info['schema_version']}, last landed {landed}"
                ),
            )
        )
    print_table(table, lines)


def _print_quality(batches: list[dict[str, Any]]) -> None:
    # the rules that did not pass go below the table, one line each: in a cell they
    # wrapped to a column a few characters wide
    quality = Table("table", "last batch", "rows in", "staged", "quarantined", "rules")
    lines = []
    flagged: list[str] = []
    for batch in batches:
        failing = [r for r in batch["rules"] if r["status"] != "pass"]
        flagged += [
            f"{batch['table']} {r['rule']}: {r['status']} {r['failed']:,} of {r['checked']:,} rows"
            for r in failing
        ]
        rules = (
            f"{len(failing)} of {len(batch['rules'])} flagged"
            if failing
            else f"all {len(batch['rules'])} pass"
            if batch["rules"]
            else "none"
        )
        counts = [f"{batch[k]:,}" for k in ("rows_in", "rows_out", "rows_quarantined")]
        quality.add_row(batch["table"], batch["status"], *counts, rules)
        lines.append(
            (
                "quality",
                escape(
                    f"{batch['table']}: last batch {batch['status']}, {counts[0]} rows in, "
                    f"{counts[1]} staged, {counts[2]} quarantined; rules: {rules}"
                ),
            )
        )
    print_table(quality, lines)
    for line in flagged:
        labelled("flagged", escape(line))


def _print_runs(report: dict[str, Any]) -> None:
    if report["runs"]:
        last = report["runs"][0]
        ok = next((r for r in report["runs"] if r["status"] == "succeeded"), None)
        labelled(
            "runs",
            f"last {last['run_id']} {last['status']}"
            + (f" at {last['failed_state']}" if last["failed_state"] else "")
            + (
                " (its process is gone; the next run marks it aborted)"
                if last["status"] == "died"
                else ""
            )
            + (f"; last success {ok['run_id']}" if ok and ok is not last else "")
            + " (`riverbed runs` for more)",
        )
        hour = report["last_hour"]
        labelled(
            "last hour",
            f"{plural(int(hour['runs_succeeded']), 'run')} succeeded, "
            f"{int(hour['runs_failed'])} failed (slowest {hour['slowest_run_seconds']:.1f} s); "
            f"{int(hour['transform_rows_in']):,} rows transformed, "
            f"{int(hour['transform_rows_quarantined']):,} quarantined, "
            f"{int(hour['load_rows']):,} loaded",
        )
    else:
        labelled("runs", "none yet (`riverbed run --once`)")


def _lag_unknown(report: dict[str, Any]) -> str:
    unreachable = report["source"]["state"] == "unreachable"
    return "unknown (source unreachable)" if unreachable else "-"
