"""`riverbed audit`: the audit trail, every gateway decision and governance change, newest
first, and `--verify`, which walks its hash chain (riverbed.state.audit_chain)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.text import Text

from riverbed.cli.common import ConfigOption, app, console, open_project, plural, print_wrapped
from riverbed.errors import RiverbedError, UsageError
from riverbed.state.records import AuditCheck, AuditRecord

# an age: 90s, 30m, 1h, 2d, 1w (a number, then its unit)
_AGE = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# the columns before the query's but the principal's: time, path, allowed, rows, their gaps
_FIXED = 14 + 2 + 2 + 6 + 2 + 7 + 2 + 6 + 2
_PRINCIPAL = (len("principal"), 16)  # the principal's column: as wide as the longest, within


@app.command(short_help="The audit trail: who read what, allowed or denied; --verify its chain.")
def audit(
    principal: Annotated[
        str | None, typer.Option(metavar="P", help="Only the records of principal P.")
    ] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only the denied reads.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="T",
            help="Only records from T on: a UTC time (2026-12-01T10:00:00Z, 2026-12-01) or an "
            "age (30m, 1h, 2d).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="How many records to list.")] = 50,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Walk the whole hash chain: exit 0 if intact, 1 naming the first record "
            "edited, deleted or inserted.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts: every field, the SQL whole.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """The audit trail: every read through the gateway (time, principal, path, allowed or
    denied and why, rows, the SQL) and every governance change, newest first.

    Example: `riverbed audit --denied --since 1h`, `riverbed audit --verify`
    """
    if verify and (principal is not None or denied or since is not None):
        raise UsageError(
            "--verify checks the whole trail; it goes without --principal, --denied, --since"
        )
    start = parse_since(since, time.time()) if since is not None else None
    project = open_project(config)
    from riverbed.state import open_state

    store = open_state(project)
    try:
        if verify:
            _verify(store.audit.verify(), as_json)
            return
        records = store.audit.records(principal=principal, denied=denied, since=start, limit=limit)
    finally:
        store.close()
    if as_json:
        print(json.dumps([_as_json(r) for r in records]))
        return
    _print_records(records, limit, filtered=principal is not None or denied or since is not None)


def parse_since(text: str, now: float) -> float:
    """The time ``--since`` names: an age before ``now`` (30m, 1h, 2d), or a date or time in
    ISO form, UTC unless it says otherwise (as `riverbed run --from` reads one)."""
    age = _AGE.fullmatch(text.strip())
    if age is not None:
        return now - float(age["n"]) * _SECONDS[age["unit"].lower()]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give a UTC time like 2026-12-01T10:00:00Z or 2026-12-01, or an "
            "age like 30m, 1h, 2d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _verify(check: AuditCheck, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"intact": check.intact, **asdict(check)}))
        if not check.intact:
            raise typer.Exit(1)
        return
    if check.intact:
        console.print(f"audit chain intact: {plural(check.records, 'record')}", highlight=False)
        return
    raise RiverbedError(
        f"audit chain broken at record {check.record}: {check.problem} ({check.why}); "
        f"{plural(check.records, 'record')} before it verify"
    )


def _as_json(record: AuditRecord) -> dict[str, object]:
    return {"time": _iso(record.ts), **asdict(record)}


def _print_records(records: list[AuditRecord], limit: int, filtered: bool) -> None:
    """One line per record, fitting the console (80 columns in a pipe): the query (or the
    change and its detail) cut to the room left, a denial's reason whole below it."""
    if not records:
        console.print(
            "no audit records match"
            if filtered
            else "no audit records yet: every read through the gateway and every governance "
            "change is recorded here",
            highlight=False,
        )
        return
    low, high = _PRINCIPAL
    width = min(max([low, *(len(r.principal) for r in records)]), high)
    room = max(console.width - _FIXED - width, 20)
    console.print(
        f"{'time (UTC)':<14}  {'principal':<{width}}  {'path':<6}  {'allowed':<7}  "
        f"{'rows':>6}  query",
        highlight=False,
    )
    for r in records:
        allowed = Text("yes    ") if r.allowed else Text("DENIED ", style="red")
        rows = "-" if r.rows is None else f"{r.rows:,}"
        line = Text.assemble(
            f"{_clock(r.ts)}  {_cut(r.principal, width):<{width}}  {r.path:<6}  ",
            allowed,
            f"  {rows:>6}  {_cut(_what(r), room)}",
        )
        console.print(line, highlight=False)
        if not r.allowed and r.reason:
            print_wrapped(Text(r.reason), indent=4)
    if len(records) == limit:
        console.print(
            f"the newest {plural(limit, 'record')}; --limit N shows more, --json every field",
            highlight=False,
        )


def _what(record: AuditRecord) -> str:
    """What a record is about in one line: the query, or the change and its detail."""
    if record.sql is not None:
        return " ".join(record.sql.split())
    detail = ", ".join(f"{k}={json.dumps(v)}" for k, v in record.detail.items())
    return f"{record.action}: {detail}" if detail else record.action


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(ts: float) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.gmtime(ts))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
