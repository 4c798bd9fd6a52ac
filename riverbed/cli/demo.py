"""`riverbed demo`: the whole pipeline end to end on the embedded defaults, explained as it goes.

1. source up  2. history (seeded once)  3. capture: the snapshot  4. live traffic, with
`capture --follow` and pipeline runs every few seconds beside it  5. the last changes drained
and one more run  6. what landed and what the quality rules caught  7. the warehouse (and the
same customers as admin and as an EU analyst, and a customer erased: governance)  8. the
runs, lag and alarms  9. where to look next, and the dashboards' logins. Safe to run twice: an existing shop is kept.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any
from urllib.parse import quote

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
    say_wrapped,
    start_logging,
)
from riverbed.cli.run import print_report
from riverbed.cli.shop import drive_workload, report_workload, seed_shop
from riverbed.config import Project


@app.command(short_help="Everything end to end on the embedded defaults, explained.")
def demo(
    duration: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Seconds of live traffic.")
    ] = 20.0,
    rate: Annotated[
        float, typer.Option(min=0, metavar="N", help="Changes per second of live traffic.")
    ] = 2000.0,
    dirty_ratio: Annotated[
        float,
        typer.Option(min=0, max=1, metavar="RATIO", help="Share of checkable rows written dirty."),
    ] = 0.02,
    every: Annotated[
        float,
        typer.Option(
            min=1, metavar="SECONDS", help="Seconds between pipeline runs during the traffic."
        ),
    ] = 5.0,
    config: ConfigOption = None,
) -> None:
    """Everything end to end on the embedded defaults: source, history, capture (snapshot,
    then following the WAL), live traffic with dirty rows, pipeline runs on a schedule
    (quality rules, SCD2 dimensions, facts), and a summary: what was captured, quality,
    dimension versions, fact totals, lag, alarms, and where to look next.

    Safe to run twice: an existing shop is kept and gets more traffic.

    Example: `riverbed demo --duration 30`
    """
    project = open_project(config)
    start_logging(project, quiet=False)
    run_demo(project, duration=duration, rate=rate, dirty_ratio=dirty_ratio, every=every)


def run_demo(
    project: Project, *, duration: float, rate: float, dirty_ratio: float, every: float
) -> None:
    from riverbed.capture.runner import run_capture
    from riverbed.orchestrate.runner import run_pipeline
    from riverbed.shop.history import HistorySpec
    from riverbed.shop.schema import seeded_counts
    from riverbed.shop.workload import WorkloadSpec
    from riverbed.source.connection import source_for

    source = source_for(project)
    schema_name = project.config.source.schema_name
    console.rule("1. source")
    if source.embedded is not None:
        with console.status("starting PostgreSQL ..."):
            done = source.embedded.up()
        say_wrapped(f"embedded PostgreSQL {', '.join(done)}: {source.display}", highlight=False)
    else:
        say_wrapped(f"using {source.display} (source.dsn)", highlight=False)
    console.rule("2. history")
    with source.connect() as conn:
        counts = seeded_counts(conn, schema_name)
    if counts and counts.get("orders"):
        console.print(f"shop already seeded ({counts['orders']:,} orders); keeping it")
    else:
        seed_shop(project, HistorySpec(), reset=counts is not None, quiet=False)
    console.rule("3. capture: the snapshot")
    first = run_capture(project, follow=False, say=lambda line: say_wrapped(line, highlight=False))
    if first.resumed_from is not None:
        console.print("capture resumed where it stopped last time")
    with console.status("first pipeline run: quality rules, transforms, the warehouse ..."):
        report = run_pipeline(project, trigger="demo")
    _say_run(report)
    console.rule(f"4. live traffic: captured as it happens, a pipeline run every {every:g} s")
    spec = WorkloadSpec(
        rate=rate,
        duration=duration,
        dirty_ratio=dirty_ratio,
        seed=1,
        large_every=max(duration / 2, 1.0),
    )
    stats, stopped = _traffic(project, spec, every)
    report_workload(stats, spec, stopped)
    console.rule("5. the last changes: drained, then one more run")
    run_capture(project, follow=False)
    _say_run(run_pipeline(project, trigger="demo"))
    console.rule("6. what landed in the lake, and what the quality rules caught")
    _print_lake(project)
    _print_quality(project)
    console.rule("7. the warehouse: SCD2 dimensions and event facts")
    _print_warehouse(project)
    _print_governed(project)
    _print_erasure(project)
    _print_shop(source, schema_name)
    console.rule("8. runs, lag and alarms")
    _print_operations(project)
    console.rule("9. where to look next")
    _next_steps(project, source)


def _traffic(project: Project, spec: Any, every: float) -> tuple[Any, bool]:
    """The workload in this thread; `capture --follow` and scheduled runs in two others."""
    from riverbed.capture.reconnect import capture_reconnecting
    from riverbed.orchestrate.runner import run_scheduled
    from riverbed.orchestrate.schedule import EverySchedule

    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        try:
            capture_reconnecting(project, follow=True, should_stop=stop.is_set)
        except BaseException as exc:  # re-raised in the main thread below
            failures.append(exc)
            stop.set()

    def runs() -> None:
        try:
            run_scheduled(
                project,
                EverySchedule(every),
                trigger="demo",
                should_stop=stop.is_set,
                on_report=_say_run,
                wait=stop.wait,
            )
        except BaseException as exc:
            failures.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=follow, name="capture"),
        threading.Thread(target=runs, name="runs"),
    ]
    for thread in threads:
        thread.start()
    try:
        stats, stopped, lost = drive_workload(project, spec, quiet=False)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if lost is not None:
        raise lost  # the source went away: the other threads' errors are its echoes
    if failures:
        raise failures[0]
    return stats, stopped


def _say_run(report: Any) -> None:
    print_report(report, as_json=False, quiet=False)


def _say(text: str) -> None:
    """A line of the summary, wrapped at spaces to the console's width (a pipe gets 80
    columns): a terminal would otherwise break it inside a figure or a name."""
    say_wrapped(text)


def _print_lake(project: Project) -> None:
    from riverbed.capture.lag import measure_lag
    from riverbed.observe.status import gather

    report = gather(project, lambda store: measure_lag(project, store)[0])
    cap = report["capture"]
    table = Table("table", "snapshot rows", "changes", "files", "schema version")
    for name, info in report["lake"].items():
        table.add_row(
            name,
            f"{info['snapshot_rows']:,}",
            f"{info['rows'] - info['snapshot_rows']:,}",
            f"{info['files']:,}",
            str(info["schema_version"]),
        )
    console.print(table)
    lake = (
        project.path(project.config.lake.path)
        if not str(project.config.lake.path).startswith("s3://")
        else project.config.lake.path
    )
    _say(
        f"lake {lake}: complete up to {cap['position']}, lag "
        f"{format_bytes(cap['lag_bytes']) if cap['lag_bytes'] is not None else '-'}"
    )


def _print_quality(project: Project) -> None:
    from riverbed.lake.layout import quarantine_batch_dir
    from riverbed.state import open_state

    manifest = open_state(project)
    try:
        rules = manifest.transform.failing_rules()
        quarantined = manifest.transform.quarantined_rows()
    finally:
        manifest.close()
    if not rules:
        _say("every quality rule passed on every batch")
        return
    # four columns, so that a rule's name fits whole in 80 columns (a pipe's width)
    table = Table("table", "rule", "rows failed", "action taken")
    table.columns[1].overflow = "fold"  # a name too long for the column wraps, never cut
    for rule in rules:
        table.add_row(
            rule.table, escape(rule.rule), f"{rule.failed:,} of {rule.checked:,}", rule.status
        )
    console.print(table)
    _say(
        f"{quarantined:,} dirty rows quarantined with their rule and reason under "
        f"{project.config.lake.path}/{quarantine_batch_dir('<table>', '<id>')}/; the clean rows "
        "went on"
    )


def _print_warehouse(project: Project) -> None:
    """Dimension histories and fact counts, as a newcomer would ask for them."""
    from riverbed.load.model import warehouse_model
    from riverbed.load.warehouse import open_warehouse

    model = warehouse_model(project.config)
    warehouse = open_warehouse(project.config.warehouse, project.root, read_only=True)
    try:
        table = Table("dimension", "versions", "current", "deleted", "keys with history")
        for dim in model.dimensions:
            if warehouse.columns(dim.name) is None:
                continue
            key = ", ".join(f'"{k}"' for k in dim.keys)
            row = warehouse.query(
                f"select count(*) as versions, count(*) filter (where is_current_record) as current,"
                f" count(*) filter (where is_deleted) as deleted,"
                f" (select count(*) from (select {key} from {dim.name} group by {key}"
                f" having count(*) > 1) h) as changed from {dim.name}"
            ).to_pylist()[0]
            table.add_row(
                dim.name,
                f"{row['versions']:,}",
                f"{row['current']:,}",
                f"{row['deleted']:,}",
                f"{row['changed']:,}",
            )
        console.print(table)
        facts = Table("fact", "rows", "batches", "first day", "last event")
        for fact in model.facts:
            if warehouse.columns(fact.name) is None:
                continue
            row = warehouse.query(
                f"select count(*) as n, count(distinct batch_id) as batches,"
                f" min(event_ts) as first, max(event_ts) as last from {fact.name}"
            ).to_pylist()[0]
            facts.add_row(
                fact.name,
                f"{row['n']:,}",
                f"{row['batches']:,}",
                str(row["first"])[:10],
                str(row["last"])[:16],  # to the minute: the row fits in 80 columns
            )
        console.print(facts)
    finally:
        warehouse.close()


# the demo policy's two principals, and what each is shown of the same customers
_GOVERNED_PRINCIPALS = ("admin", "eu_analyst")
_GOVERNED_SAMPLE = (
    "select customer_id, full_name, left(email, 12) as email, phone, region,"
    " count(*) over () as visible from dim_customer where is_current_record"
    " order by customer_id limit 3"
)


def _print_governed(project: Project) -> None:
    """The same query as admin and as the EU analyst: governance filters rows and masks PII."""
    from riverbed.serve.queries import query_as

    principals = project.config.governance.principals
    if not all(name in principals for name in _GOVERNED_PRINCIPALS):
        return  # a policy of the user's own: nothing to compare
    for name in _GOVERNED_PRINCIPALS:
        batches = list(query_as(project, name, _GOVERNED_SAMPLE, path="cli"))
        rows = [row for batch in batches for row in batch.to_pylist()]
        if not rows:
            continue
        shown = Table(*[c for c in rows[0] if c != "visible"], title=f"--as {name}")
        for row in rows:
            shown.add_row(*[escape(str(v)) for c, v in row.items() if c != "visible"])
        console.print(shown)
        say_wrapped(f"{name} sees {rows[0]['visible']:,} current customers")


# the demo's data subject: the first current customer whose personal data is still there
_SUBJECT = (
    "select customer_id from dim_customer where is_current_record and email is not null"
    " order by customer_id limit 1"
)
_SUBJECT_VERSIONS = (
    "select customer_id, full_name, email, phone, city, effective_date"
    " from dim_customer where customer_id = {key} order by effective_date"
)


def _print_erasure(project: Project) -> None:
    """Right to be forgotten: one customer erased everywhere, their history kept."""
    from riverbed.cli.forget import erase_subjects
    from riverbed.serve.queries import query_as

    if "admin" not in project.config.governance.principals or (
        "customers" not in project.config.tables
    ):
        return  # a config of the user's own: nothing to show
    found = [r for b in query_as(project, "admin", _SUBJECT, path="cli") for r in b.to_pylist()]
    if not found:
        return
    key = int(found[0]["customer_id"])
    say_wrapped(
        f"right to be forgotten: `riverbed forget customers {key}` erases that customer's "
        "personal columns from every lake file and every version in the warehouse; the "
        "history stays",
        highlight=False,
    )
    for name, erased, lake, scrubbed in erase_subjects(project, "customers", [str(key)]):
        say_wrapped(
            f"{name} {', '.join(erased)}: {plural(lake.files, 'lake file')} rewritten, "
            f"{plural(sum(scrubbed.values()), 'warehouse row')} scrubbed",
            highlight=False,
        )
    sql = _SUBJECT_VERSIONS.format(key=key)
    versions = [r for b in query_as(project, "admin", sql, path="cli") for r in b.to_pylist()]
    shown = Table(*(versions[0] if versions else ["customer_id"]), title=f"customer {key}, erased")
    for row in versions:
        shown.add_row(*[escape(str(v))[:19] for v in row.values()])
    console.print(shown)


def _print_shop(source: Any, schema_name: str) -> None:
    """The shape of the shop's data, which the dashboards will show."""
    from riverbed.shop.summary import summarize

    with source.connect() as conn:
        summary = summarize(conn, schema_name)
    _say("in the source: " + ", ".join(f"{n:,} {t}" for t, n in summary.rows.items()))
    if summary.categories:
        grow, fall = summary.categories[0], summary.categories[-1]
        _say(
            f"items sold {summary.first_month} -> {summary.last_month}: {grow.category} "
            f"{grow.change:+.0%} (fastest growing), {fall.category} {fall.change:+.0%} "
            "(fastest declining)"
        )
    _say(
        "sellers by return rate: "
        + ", ".join(f"{n} {tier}" for tier, n in summary.seller_tiers.items())
    )
    if summary.revenue_by_region:
        _say(
            "revenue by region: "
            + ", ".join(
                f"{region} {value:,.0f}" for region, value in summary.revenue_by_region.items()
            )
        )


def _print_operations(project: Project) -> None:
    from riverbed.state import open_state

    manifest = open_state(project)
    try:
        runs = manifest.runs.latest(limit=1000)
        alarms = manifest.alarms.states()
        latest = {s.name: s.value for s in manifest.metrics.latest("capture_lag")}
    finally:
        manifest.close()
    by_status: dict[str, int] = {}
    for r in runs:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    durations = sorted(r.ended_at - r.started_at for r in runs if r.ended_at)
    median = durations[len(durations) // 2] if durations else 0.0
    idle = sum(1 for r in runs if r.idle)
    _say(
        f"{len(runs)} runs: "
        + ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
        + (f" ({idle} of them with nothing new)" if idle else "")
        + f"; median {median:.1f} s"
    )
    if "capture_lag_seconds" in latest:
        _say(
            f"capture lag at the end: {latest['capture_lag_seconds']:.1f} s, "
            f"{int(latest.get('capture_lag_bytes', 0)):,} bytes of WAL"
        )
    for alarm in alarms:  # as `riverbed status` prints them: a reason wraps under itself
        color = {"OK": "green", "ALARM": "red"}.get(alarm.state, "yellow")
        labelled(
            "alarm",
            f"{escape(alarm.alarm)}: [{color}]{alarm.state}[/{color}] {escape(alarm.reason)}",
        )


def _next_steps(project: Project, source: Any) -> None:
    schema_name = project.config.source.schema_name
    psql, uri = "psql", source.display
    if source.embedded is not None:  # psql reads the generated password from its file too
        psql = str(source.embedded.psql)
        uri += f"?passfile={quote(str(source.embedded.password_file))}"
    logs = project.path(project.config.logs.path)
    lines = [
        f"browse schema {schema_name}:",
        f"{psql} '{uri}'",
        "riverbed runs                   -- run history (`runs show RUN_ID`: a timeline)",
        "riverbed status                 -- lag, lake, quality results, runs, alarms",
        'riverbed query --as admin "select * from dim_customer where customer_id = 42"',
        *(
            [  # the demo policy: the same rows, as governance shows them to an EU analyst
                'riverbed query --as eu_analyst "select * from dim_customer"  -- governed'
            ]
            if "eu_analyst" in project.config.governance.principals
            else []
        ),
        "riverbed shop run --rate 5000   -- more live traffic (Ctrl-C stops)",
        "riverbed capture --follow       -- stream changes into the lake until Ctrl-C",
        "riverbed run --every 10         -- the pipeline every 10 s until Ctrl-C",
        "riverbed serve                  -- dashboards, API, /metrics (logins below)",
        "riverbed ddl --dialect redshift -- the same model as Redshift DDL",
        "riverbed source status          -- replication slots and retained WAL",
        "logs (JSON lines):",
        f"{logs}",
        "riverbed source down            -- stop the embedded PostgreSQL",
    ]
    for line in lines:
        console.print(line, highlight=False)
    _dashboard_logins(project)


def _dashboard_logins(project: Project) -> None:
    """The dashboards' address and the demo's logins: on this terminal only (the passwords
    are redacted from the logs, riverbed.govern.logins)."""
    from riverbed.govern.logins import demo_logins

    logins = demo_logins(project)
    console.rule("the dashboards")
    console.print("riverbed serve, then open http://127.0.0.1:8000 and log in as", highlight=False)
    for name, password in logins.items():
        console.print(f"  {name} / {password}", highlight=False)
    if not logins:
        console.print("  a principal of governance.principals with a password", highlight=False)
