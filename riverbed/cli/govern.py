"""`riverbed govern apply|show`: the access policy, natively on a PostgreSQL warehouse
(riverbed.govern.postgres), and the policy as each principal gets it."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from riverbed.cli.common import (
    ConfigOption,
    app,
    check_choice,
    console,
    open_project,
    plural,
    print_wrapped,
)
from riverbed.config import Project
from riverbed.errors import UsageError

if TYPE_CHECKING:
    from riverbed.govern.postgres import PrincipalPlan, Statement
    from riverbed.load.warehouse import Warehouse

govern_app = typer.Typer(
    help="The access policy: apply it natively on PostgreSQL, show it per principal.",
    epilog="Example: `riverbed govern show --dialect postgres`, then `riverbed govern apply`",
    no_args_is_help=True,
)
app.add_typer(govern_app, name="govern")

_DIALECTS = ("postgres",)
_WIDTH = 80  # show's SQL, wrapped for a pipe and a narrow terminal


@govern_app.command(
    "apply", short_help="Create the principals' roles, grants, row policies and views."
)
def govern_apply(config: ConfigOption = None) -> None:
    """On a PostgreSQL warehouse, create a login role per principal, column grants, row-level
    security and masked views, so psql or a BI tool logging in as a principal sees what the
    gateway shows. Idempotent: a rerun after a policy change converges. Audited.

    Example: `riverbed govern apply`
    """
    from riverbed.govern.audit import record_change
    from riverbed.govern.postgres import runnable, summary
    from riverbed.state import open_state

    project = open_project(config)
    if project.config.warehouse.engine != "postgres":
        raise UsageError(
            "govern apply creates PostgreSQL roles; warehouse.engine is "
            f"{project.config.warehouse.engine}, where the gateway alone governs reads"
        )
    if not project.config.governance.principals:
        raise UsageError("governance.principals is empty: there is no principal to apply")
    warehouse = _open(project, read_only=False)
    try:
        plans, todo = _planned(project, warehouse, key=True)
        with warehouse.transaction():
            for statement in todo:
                warehouse.execute(runnable(statement))
    finally:
        warehouse.close()
    granted = dict(summary(plans))
    store = open_state(project)
    try:
        record_change(
            store,
            principal=getpass.getuser(),
            action="apply",
            detail={"principals": granted, "statements": len(todo)},
        )
    finally:
        store.close()
    for name, tables in granted.items():
        print_wrapped(
            Text(f"{name}: role {name}, schema {name}, {plural(len(tables), 'view')}"),
            indent=2,
        )
    console.print(f"applied: {plural(len(todo), 'statement')}, audited", highlight=False)


@govern_app.command("show", short_help="The policy per principal; the SQL apply runs.")
def govern_show(
    dialect: Annotated[
        str | None,
        typer.Option(metavar="DIALECT", help="Also print the SQL apply runs there: postgres."),
    ] = None,
    principal: Annotated[str | None, typer.Option(metavar="P", help="Only principal P.")] = None,
    config: ConfigOption = None,
) -> None:
    """Each principal's roles, and per table it may read: the columns, the masks and the row
    filter (its attributes bound). With --dialect postgres, the SQL `govern apply` would run
    (passwords and keys never printed).

    Example: `riverbed govern show --principal eva --dialect postgres`
    """
    from riverbed.govern.policy import Policy

    if dialect is not None:
        check_choice("--dialect", dialect, _DIALECTS)
    project = open_project(config)
    warehouse = _open(project, read_only=True)
    try:
        plans, todo = _planned(project, warehouse, sql=dialect is not None)
    finally:
        warehouse.close()
    policy = Policy.from_config(project.config)
    shown = [p for p in plans if principal is None or p.name == principal]
    if principal is not None and not shown:
        policy.principal(principal)  # the error naming the principals there are
    for plan in shown:
        _print_principal(plan, policy.principal(plan.name).roles)
    if dialect is not None:
        _print_sql(todo)


def _open(project: Project, *, read_only: bool) -> Warehouse:
    from riverbed.load.warehouse import open_warehouse

    return open_warehouse(project.config.warehouse, project.root, read_only=read_only)


def _planned(
    project: Project, warehouse: Warehouse, *, sql: bool = True, key: bool = False
) -> tuple[list[PrincipalPlan], list[Statement]]:
    """The principals' plans, and (``sql``) the statements bringing the warehouse to them
    from the warehouse as it is (from nothing when it is not PostgreSQL). ``key``: with the
    PII key in them, for apply to run; show never reads it."""
    from riverbed.govern.policy import Policy
    from riverbed.govern.postgres import State, plan, statements
    from riverbed.serve.queries import read_catalog
    from riverbed.serve.roles import read_state
    from riverbed.transform.pii import pii_key

    catalog = read_catalog(warehouse)
    plans = plan(Policy.from_config(project.config), catalog)
    if not sql:
        return plans, []
    state = (
        read_state(warehouse, catalog) if warehouse.dialect == "postgres" else State.empty(catalog)
    )
    return plans, statements(plans, catalog, state, pii_key(project) if key else b"")


def _print_principal(plan: PrincipalPlan, roles: tuple[str, ...]) -> None:
    password = "a password" if plan.password is not None else "no password"
    console.print(f"principal {plan.name} (roles: {', '.join(roles)}; {password})", highlight=False)
    if not plan.tables:
        print_wrapped(Text("no tables: every table is denied"), indent=2)
    for table, access in plan.tables.items():
        columns = ", ".join(f"{c} (masked)" if c in access.masks else c for c in access.columns)
        print_wrapped(Text(f"{table}: {columns}"), indent=2)
        for column, mask in access.masks.items():
            how = mask if isinstance(mask, str) else f"sql {mask.sql}"
            print_wrapped(Text(f"mask {column}: {how}"), indent=4)
        print_wrapped(Text(f"rows: {plan.filters[table] or 'every row'}"), indent=4)


def _print_sql(todo: list[Statement]) -> None:
    from riverbed.govern.postgres import shown

    console.print("-- the SQL `riverbed govern apply` runs, in one transaction", highlight=False)
    for statement in todo:
        for line in wrap_sql(shown(statement) + ";", _WIDTH):
            console.print(line, highlight=False, markup=False)


def wrap_sql(text: str, width: int) -> list[str]:
    """``text`` broken at spaces outside quotes (a string literal or a quoted name keeps its
    spaces), lines after the first indented by two; a word longer than the line stays whole."""
    words: list[str] = []
    current, quote = "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == " ":
            words.append(current)
            current = ""
            continue
        current += char
    words.append(current)
    lines: list[str] = []
    line = ""
    for word in (w for w in words if w):
        candidate = f"{line} {word}" if line else ("  " if lines else "") + word
        if line and len(candidate) > width:
            lines.append(line)
            line = "  " + word
        else:
            line = candidate
    lines.append(line)
    return lines
