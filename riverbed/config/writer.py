"""The text of a commented riverbed.yaml for a source database (`riverbed init --from-source`).

The file is written by hand rather than dumped, so that every choice riverbed.config.proposal
made sits next to a comment saying why, where the user edits it; values go through JSON (which
YAML reads as it is) wherever a bare word could change meaning (yes, no, on, null, 1e3 ...).
The result must load with riverbed.config.load_project as it is: tests/test_init_from_source.py
holds it to that.

The DSN's password (and sslpassword) never reaches the file: ``public_dsn`` splits it off, and the
file says ``password: {env: PGPASSWORD}`` instead.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from riverbed.config.fields import IDENTIFIER
from riverbed.config.proposal import LeftOut, Proposal, TablePlan
from riverbed.errors import UsageError

PASSWORD_VARIABLE = "PGPASSWORD"  # libpq's own: psql and pg_dump read it too
_SECRET_KEYWORDS = ("password", "sslpassword")
# bare words YAML 1.1 (PyYAML) reads as something other than a string
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def public_dsn(dsn: str) -> tuple[str, bool]:
    """``dsn`` without its password, as ``key=value`` pairs, and whether it had one."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception as exc:  # psycopg's ProgrammingError, with libpq's message
        reason = " ".join(str(exc).split())
        raise UsageError(f"--from-source: not a PostgreSQL connection string ({reason})") from None
    secret = any([parts.pop(key, None) for key in _SECRET_KEYWORDS])
    # the order a reader looks for them in, then the rest (sslmode ...) as given
    ordered: dict[str, Any] = {
        k: parts.pop(k) for k in ("host", "port", "dbname", "user") if k in parts
    }
    ordered |= parts
    return make_conninfo("", **{k: str(v) for k, v in ordered.items()}), secret


def config_text(proposal: Proposal, dsn: str, has_password: bool) -> str:
    """The whole riverbed.yaml: header, source, the stores, tables, orchestration, alarms."""
    lines = [
        "# riverbed.yaml, written by `riverbed init --from-source` from the catalog of schema "
        f"{proposal.schema}.",
        "# Every choice below has its reason beside it: edit what does not fit, then",
        "# `riverbed capture --once` and `riverbed run --once`. Relative paths are relative to",
        "# this file's folder. Secrets are never written here: a secret setting takes",
        "# {env: VARIABLE} or {file: PATH}.",
        "version: 1",
        "",
    ]
    lines += _source(proposal.schema, dsn, has_password)
    lines += _STORES.splitlines()
    lines += ["", *_TABLES_HEADER.splitlines(), "tables:"]
    for plan in proposal.tables:
        lines += _table(plan)
    lines += _left_out(proposal.left_out)
    lines += ["", *_REST.splitlines()]
    return "\n".join(lines) + "\n"


def _source(schema: str, dsn: str, has_password: bool) -> list[str]:
    lines = [
        "# The source PostgreSQL (14 or newer, wal_level=logical; the user needs the",
        "# REPLICATION attribute; `riverbed source grants` prints the minimal grants).",
        "source:",
        f"  dsn: {_scalar(dsn)}",
    ]
    if has_password:
        lines.append(
            f"  password: {{env: {PASSWORD_VARIABLE}}}   # the DSN's password, kept out of "
            "this file"
        )
    else:
        lines.append(
            f"  # password: {{env: {PASSWORD_VARIABLE}}}   # the DSN had none; libpq reads "
            f"{PASSWORD_VARIABLE} or ~/.pgpass"
        )
    lines += [
        f"  schema: {_scalar(schema)}",
        "  # The slot and publication capture creates: left out, names of this project's own.",
        "  # slot: my_slot",
        "  # publication: my_publication",
        "",
    ]
    return lines


_STORES = """\
# The lake (raw CDC files, staged batches, quarantine): a folder, or s3://bucket/prefix.
lake:
  path: .riverbed/lake

# The warehouse: duckdb (one file) or postgres (engine: postgres, dsn: "...").
warehouse:
  engine: duckdb
  path: .riverbed/warehouse.duckdb

# Manifest, bookmarks, run history, metrics: sqlite, one file; or postgres (engine: postgres,
# dsn: "...", password: {env: ...}) for capture, runs and the web app on several hosts.
state:
  engine: sqlite
  path: .riverbed/state.db"""

_TABLES_HEADER = """\
# One entry per captured table. kind: dimension (SCD Type 2: a change to a tracked column makes
# a version) or fact (append-only events, keyed into the dimensions whose single-column natural
# key they carry). quality: rules with action quarantine | warn | fail. Also possible per
# table: transforms, pii, sort_key, dist_key (see the demo config: `riverbed init`)."""


def _table(plan: TablePlan) -> list[str]:
    lines = ["", f"  {_key(plan.table.name)}:"]
    for line in plan.why:
        lines += _comment(line, "    ")
    lines += [f"    kind: {plan.kind}", f"    target: {plan.target}"]
    lines += _comment(f"keys: {plan.key_reason}", "    ")
    lines += _wrapped_flow(f"    keys: {_flow(list(plan.keys))}", "      ")
    if plan.tracked:
        lines += _comment(plan.tracked_reason, "    ")
        lines += _wrapped_flow(f"    tracked: {_flow(list(plan.tracked))}", "      ")
    lines += _business_time(plan)
    for note in plan.notes:
        lines += _comment(note, "    ")
    if plan.rules:
        lines.append("    quality:")
        for rule in plan.rules:
            lines += _comment(rule.origin, "      ")
            lines += _wrapped_flow(f"      - {_flow(rule.settings)}", "         ")
    return lines


def _wrapped_flow(line: str, indent: str) -> list[str]:
    """A flow-style line of more than 100 characters broken after commas outside quotes (YAML
    reads a flow collection across lines when the lines go on indented)."""
    pieces, start, quoted, escaped = [], 0, False, False
    for at, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            pieces.append(line[start : at + 1])
            start = at + 2  # the space after the comma
    pieces.append(line[start:])
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) > 100:
            lines.append(indent + piece)
        else:
            lines[-1] += " " + piece
    return lines


def _comment(text: str, indent: str) -> list[str]:
    """``text`` as comment lines of at most 100 characters (a long SQL definition may run on)."""
    return textwrap.wrap(
        text,
        width=100,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}#   ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _business_time(plan: TablePlan) -> list[str]:
    """The column that dates the table's rows, or only the comment saying the commit time does."""
    if plan.time is None:
        return []
    lines = _comment(plan.time.comment, "    ")
    if plan.time.column is not None:
        lines.append(f"    {plan.time.setting}: {_scalar(plan.time.column)}")
    return lines


def _left_out(left: tuple[LeftOut, ...]) -> list[str]:
    lines = []
    for item in left:
        lines += ["", *_comment(f"{item.table.name}: left out, {item.reason}.", "  ")]
        lines.append("  # To capture it, run one of")
        lines += [f"  #   {fix}" for fix in item.fixes]
        lines.append("  # then `riverbed init --from-source ... --force` again.")
    return lines


_REST = """\
# How `riverbed run` executes: the default state machine, each task retried on transient
# errors; notify: who hears of a failed run.
orchestration:
  retry:
    - {errors: [transient], interval_seconds: 1, max_attempts: 3, backoff_rate: 2,
       max_delay_seconds: 30, jitter: full}
  notify: [console]

notifiers:
  console: {type: log}

# The JSON-lines log (relative to this file's folder) and the least level it records:
# debug | info | warning | error. The console shows warnings whatever the file keeps.
logs:
  path: .riverbed/logs/riverbed.jsonl
  level: info

# Alarms with CloudWatch semantics (see the demo config, `riverbed init`, for more).
alarms:
  capture_lag_high:
    metric: capture_lag_seconds
    statistic: maximum
    period_seconds: 60
    threshold: 300
    evaluation_periods: 3
    datapoints_to_alarm: 2
    notify: [console]
  run_failed:
    metric: runs_failed
    statistic: sum
    period_seconds: 300
    threshold: 0
    treat_missing_data: not_breaching
    notify: [console]

# Who may read what (`riverbed query --as NAME`), default deny: add row filters and masks
# here (README, Governance).
governance:
  roles:
    admin: {grants: [{tables: ["*"]}], unmasked: ["*"]}
    analyst: {grants: [{tables: ["*"]}]}
  principals:
    # the web app's logins (`riverbed serve`): a random password is written to each file on
    # first use (0600); `cat` it, or write your own there and restart the server
    admin: {roles: [admin], password: {file: .riverbed/logins/admin.password}}
    analyst: {roles: [analyst], password: {file: .riverbed/logins/analyst.password}}"""


def _key(name: str) -> str:
    return name if _plain(name) else json.dumps(name)


def _plain(text: str) -> bool:
    return bool(IDENTIFIER.match(text)) and text.lower() not in _YAML_WORDS


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if _plain(value) else json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return repr(value) if isinstance(value, int | float) else json.dumps(str(value))


def _flow(value: Any) -> str:
    """``value`` in YAML's flow style: [a, b], {type: range, min: 0}."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)
