"""The typed shape of riverbed.yaml: the root model ``RiverbedConfig`` and the checks that span
its sections.

Every section the product will have is modelled, so a user sees one file from day one; sections a
later stage consumes are modelled as far as they can be checked today (names, enums, cross
references). Each section lives in a module of its own: ``fields`` (the base model, secrets,
DSNs), ``source`` (source, capture), ``stores`` (lake, warehouse, state), ``tables`` (transform,
tables and their quality rules), ``orchestration``, ``alarms`` (notifiers, alarms),
``governance``, ``logs`` and ``serve``. A section checks itself; what it names in another section (a notifier, a
``governance``, ``logs`` and ``dashboards``. A section checks itself; what it names in another section (a notifier, a
table, a role, a metric) is checked here, by ``cross_reference_problems``, once the whole file
has loaded. ``secret_refs`` finds every secret in the file, so the logs can mask their values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, model_validator

from riverbed.config.alarms import AlarmConfig, NotifierConfig
from riverbed.config.dashboards import DashboardsConfig
from riverbed.config.fields import IDENTIFIER, Model, SecretRef
from riverbed.config.governance import GovernanceConfig, copies_problems, governance_problems
from riverbed.config.logs import LogsConfig
from riverbed.config.metric_names import METRIC_NAMES
from riverbed.config.orchestration import (
    MachineConfig,
    OrchestrationConfig,
    ParallelState,
    TaskState,
)
from riverbed.config.serve import ServeConfig
from riverbed.config.source import CaptureConfig, SourceConfig
from riverbed.config.stores import LakeConfig, StateConfig, WarehouseConfig
from riverbed.config.tables import QualityRule, TableConfig, TransformConfig
from riverbed.errors import UsageError


class RiverbedConfig(Model):
    version: Literal[1] = 1
    source: SourceConfig = SourceConfig()
    capture: CaptureConfig = CaptureConfig()
    transform: TransformConfig = TransformConfig()
    lake: LakeConfig = LakeConfig()
    warehouse: WarehouseConfig = WarehouseConfig()
    state: StateConfig = StateConfig()
    tables: dict[str, TableConfig] = {}
    orchestration: OrchestrationConfig = OrchestrationConfig()
    notifiers: dict[str, NotifierConfig] = {}
    alarms: dict[str, AlarmConfig] = {}
    governance: GovernanceConfig = GovernanceConfig()
    logs: LogsConfig = LogsConfig()
    serve: ServeConfig = ServeConfig()
    dashboards: DashboardsConfig = DashboardsConfig()

    @model_validator(mode="after")
    def _personal_columns_for_the_lake(self) -> RiverbedConfig:
        """Tell lake.encryption which columns are personal (their own key), from the tables
        and governance sections it cannot see."""
        from riverbed.config.personal import personal_columns

        names = {c for table in self.tables for c in personal_columns(self, table)}
        self.lake.encryption._personal = frozenset(names)
        return self

    def require_table(self, name: str, option: str) -> None:
        """Refuse ``name``, given to the command-line ``option``, unless ``tables:`` has it."""
        if name not in self.tables:
            raise UsageError(
                f"{option} {name}: not a table in config; choose one of {', '.join(self.tables)}"
            )


def cross_reference_problems(config: RiverbedConfig) -> list[str]:
    """Problems that span sections (a name used in one place and defined in another)."""
    problems: list[str] = []
    for target in config.orchestration.notify:
        if target not in config.notifiers:
            problems.append(
                f"orchestration.notify: '{target}' is not a notifier; "
                f"defined: {', '.join(config.notifiers) or 'none'}"
            )
    if config.orchestration.machine is not None:
        problems += _machine_problems(config, config.orchestration.machine, "orchestration.machine")
    for i, report in enumerate(config.orchestration.reports):
        if report.principal not in config.governance.principals:
            problems.append(
                f"orchestration.reports[{i}].as: '{report.principal}' is not a principal; "
                f"defined: {', '.join(config.governance.principals) or 'none'}"
            )
    problems += _alarm_problems(config)
    problems += governance_problems(config.governance)
    problems += copies_problems(config.governance, [t.target for t in config.tables.values()])
    targets: dict[str, str] = {}
    for name, table in config.tables.items():
        for i, rule in enumerate(table.quality):
            referenced = rule.reference.split(".")[0] if rule.reference else None
            if referenced is not None and referenced not in config.tables:
                problems.append(
                    f"tables.{name}.quality.{i}.reference = '{rule.reference}': table "
                    f"'{referenced}' is not in tables; defined: {', '.join(config.tables)}"
                )
            for unknown in _unknown_sql_tables(name, rule, config.tables):
                problems.append(
                    f"tables.{name}.quality.{i}.sql: table '{unknown}' is not in tables"
                    f"{_did_you_mean(unknown, config.tables)}; defined: {', '.join(config.tables)}"
                )
        if not IDENTIFIER.match(name):
            problems.append(f"tables.{name}: table names must be plain identifiers")
        if table.target in targets:
            problems.append(
                f"tables.{name}.target: '{table.target}' is already the target of "
                f"tables.{targets[table.target]}"
            )
        targets[table.target] = name
    problems += _view_problems(config, targets)
    return problems


def _view_problems(config: RiverbedConfig, targets: dict[str, str]) -> list[str]:
    """Each fact's current-state view (``current_view``, else ``<target>_current``): a plain
    identifier, named like no table's target and no other fact's view."""
    problems: list[str] = []
    views: dict[str, str] = {}  # view -> the table whose it is
    for name, table in config.tables.items():
        if table.kind != "fact":
            continue
        view = table.current_view or f"{table.target}_current"
        if not IDENTIFIER.match(view):
            problems.append(
                f"tables.{name}.current_view: '{view}' must be a plain identifier "
                "(letters, digits, underscore)"
            )
        if view in views:
            problems.append(
                f"tables.{name}.current_view: '{view}' is already the view of tables.{views[view]}"
            )
        views[view] = name
        if view in targets:
            problems.append(
                f"tables.{name}.current_view: '{view}' is the target of tables.{targets[view]}; "
                "name the view otherwise (current_view: NAME)"
            )
    return problems


def _alarm_problems(config: RiverbedConfig) -> list[str]:
    """Alarms naming a metric Riverbed never records, or a notifier not defined."""
    problems: list[str] = []
    for name, alarm in config.alarms.items():
        if alarm.metric not in METRIC_NAMES:
            problems.append(_unknown_metric(name, alarm.metric))
        for target in alarm.notify:
            if target not in config.notifiers:
                problems.append(
                    f"alarms.{name}.notify: '{target}' is not a notifier; "
                    f"defined: {', '.join(config.notifiers) or 'none'}"
                )
    return problems


def _unknown_sql_tables(table: str, rule: QualityRule, tables: dict[str, Any]) -> list[str]:
    """Tables a custom rule's SQL reads that are not config tables: the rule compiler
    (transform.rules.custom._rewrite_tables) would refuse them at run time, which the config
    alone decides now. A CTE, a table function and the rule's own table are not reads of a
    config table; a qualified name (shop.orders) never is one."""
    if rule.sql is None:
        return []
    import sqlglot  # the config loads fast when no SQL is configured
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(rule.query_text, read="duckdb")
    except sqlglot.errors.ParseError:
        return []  # reported by config.tables._check_sql
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    unknown: list[str] = []
    for node in tree.find_all(exp.Table):
        if not isinstance(node.this, exp.Identifier):
            continue  # a table function
        name = exp.table_name(node)
        if name.lower() in ctes or name == table or name in tables or name in unknown:
            continue
        unknown.append(name)
    return unknown


def _unknown_metric(alarm: str, metric: str) -> str:
    import difflib

    close = difflib.get_close_matches(metric, sorted(METRIC_NAMES), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (
        f"alarms.{alarm}.metric: '{metric}' is not a metric Riverbed records; "
        f"{hint}metrics: {', '.join(sorted(METRIC_NAMES))}"
    )


def _did_you_mean(name: str, choices: dict[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _machine_problems(config: RiverbedConfig, machine: MachineConfig, where: str) -> list[str]:
    """Tables a task names must be config tables of the right kind."""
    problems: list[str] = []
    for name, state in machine.states.items():
        if isinstance(state, ParallelState):
            for i, branch in enumerate(state.branches):
                problems += _machine_problems(
                    config, branch, f"{where}.states.{name}.branches[{i}]"
                )
        if not isinstance(state, TaskState) or state.table is None:
            continue
        table = config.tables.get(state.table)
        if table is None:
            problems.append(
                f"{where}.states.{name}.table: '{state.table}' is not in tables; "
                f"defined: {', '.join(config.tables) or 'none'}"
            )
        elif state.resource == "dimension" and table.kind != "dimension":
            problems.append(
                f"{where}.states.{name}.table: '{state.table}' is a {table.kind}, "
                "a dimension task needs a dimension table"
            )
    return problems


def secret_refs(model: BaseModel) -> list[SecretRef]:
    """Every secret reference anywhere in ``model`` (so the logs can mask their values)."""
    found: list[SecretRef] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretRef):
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(model)
    return found
