"""riverbed.yaml's ``governance:`` section: who may read which warehouse rows and columns, and
how the columns they may not see in clear are masked.

The model (Lake Formation's data filters, from one YAML file)::

    tags:        {dim_customer.email: [pii]}       # columns named by tag in grants
    roles:
      analyst:
        inherits: [reader]                         # roles are sets of grants; inheriting adds
        grants:
          - tables: [dim_customer, "fact_*"]       # names or globs
            columns: {exclude_tags: [pii]}         # or {include: [...]} or {exclude: [...]}
            row_filter: "region = principal.region"
            masks: {email: email_domain, phone: show_last_4, name: {sql: "upper({column})"}}
        unmasked: [dim_customer.full_name]         # PII (tables.<t>.pii) seen in clear
    principals:
      eu_analyst: {roles: [analyst], attributes: {region: EU}, password: {env: EU_PASSWORD}}

Default deny: a table no grant names, or a column no grant leaves in, does not exist for the
principal. The keys of the first version, ``tables: [...]`` and ``row_filter: {table: SQL}``
on a role, still work: they become grants (``_legacy_grants``). Checks that need the whole
section (a role's ``inherits`` naming no role, a cycle) are in ``governance_problems``, called
with the other cross references once the file has loaded.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, ValidationError, field_validator, model_validator

from riverbed.config.fields import Model, Secret

# masks a grant may name for a column; {sql: ...} is a custom one
MaskName = Literal[
    "hash", "redact", "show_last_4", "show_first_4", "null", "year_only", "email_domain"
]
_TABLE_COLUMN = re.compile(r"^[^.\s]+\.[^.\s]+$")


class CustomMask(Model):
    sql: str  # a SQL expression in the warehouse's dialect, with {column} for the column

    @field_validator("sql")
    @classmethod
    def _has_column(cls, sql: str) -> str:
        if "{column}" not in sql:
            raise ValueError(
                'a custom mask must use the column as {column}, e.g. sql: "left({column}, 1)"'
            )
        return sql


_MASK_NAMES: tuple[str, ...] = get_args(MaskName)


def _one_mask(value: Any) -> Any:
    """A mask's name, or a custom mask made here: one line for a wrong one, not one per
    member of the union."""
    if isinstance(value, dict):
        try:
            return CustomMask(**value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if value not in _MASK_NAMES:
        raise ValueError(
            f'not a mask; masks: {", ".join(_MASK_NAMES)}, or {{sql: "... {{column}} ..."}}'
        )
    return value


Mask = Annotated[MaskName | CustomMask, BeforeValidator(_one_mask)]


class ColumnsConfig(Model):
    """Which columns of the granted tables: exactly one of the three lists."""

    include: list[str] | None = None
    exclude: list[str] | None = None
    exclude_tags: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ColumnsConfig:
        given = [k for k in ("include", "exclude", "exclude_tags") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of include: [columns], exclude: [columns] or "
                f"exclude_tags: [tags] (given: {', '.join(given) or 'none'})"
            )
        return self


class GrantConfig(Model):
    tables: list[str]  # warehouse tables, by name or glob ("fact_*", "*")
    columns: ColumnsConfig | None = None  # None: every column
    row_filter: str | None = None  # SQL predicate; principal.<attribute> for the asker's
    masks: dict[str, Mask] = {}  # column: mask

    @field_validator("tables")
    @classmethod
    def _some_tables(cls, tables: list[str]) -> list[str]:
        if not tables:
            raise ValueError('name at least one table, or "*" for every table')
        return tables

    @field_validator("row_filter")
    @classmethod
    def _parses(cls, row_filter: str | None) -> str | None:
        if row_filter is not None:
            import sqlglot  # on use: loading sqlglot costs every command a tenth of a second

            try:
                sqlglot.parse_one(row_filter)
            except sqlglot.errors.SqlglotError as exc:
                reason = str(exc).splitlines()[0]
                raise ValueError(
                    f'not a valid SQL predicate ({reason}); e.g. "region = principal.region"'
                ) from None
        return row_filter


class RoleConfig(Model):
    inherits: list[str] = []  # roles whose grants this role holds too
    grants: list[GrantConfig] = []
    unmasked: list[str] = []  # table.column PII this role sees in clear (globs allowed)
    # the first version's keys, kept working: they become grants
    tables: list[str] = []  # warehouse tables this role may read; "*" for all
    row_filter: dict[str, str] = {}  # table: SQL predicate

    def all_grants(self) -> list[GrantConfig]:
        """The role's own grants, those of the first version's keys first."""
        return _legacy_grants(self.tables, self.row_filter) + list(self.grants)


def _legacy_grants(tables: list[str], row_filter: dict[str, str]) -> list[GrantConfig]:
    """``tables: [...]`` and ``row_filter: {table: SQL}`` as grants. A filtered table gets a
    grant of its own, which, naming it exactly, wins over a glob in ``tables``."""
    grants = [GrantConfig(tables=list(tables))] if tables else []
    grants += [GrantConfig(tables=[t], row_filter=sql) for t, sql in row_filter.items()]
    return grants


def _scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError("an attribute is one string, number or boolean, e.g. region: EU")
    return value


Attribute = Annotated[str | int | float | bool, BeforeValidator(_scalar)]


class PrincipalConfig(Model):
    roles: list[str] = []
    attributes: dict[str, Attribute] = {}  # what row filters read as principal.<name>
    password: Secret | None = None  # for the web app: kept in memory only as a scrypt hash
    token: Secret | None = None  # for the API: likewise


class GovernanceConfig(Model):
    tags: dict[str, list[str]] = {}  # table.column: tags
    roles: dict[str, RoleConfig] = {}
    principals: dict[str, PrincipalConfig] = {}
    pii_key: Secret | None = None  # HMAC key for hashing/tokenising PII
    # warehouse tables (names or globs) kept as governed copies, one per security context
    # (riverbed.serve.copies); none by default
    copies: list[str] = []

    @field_validator("tags")
    @classmethod
    def _table_dot_column(cls, tags: dict[str, list[str]]) -> dict[str, list[str]]:
        wrong = [key for key in tags if not _TABLE_COLUMN.match(key)]
        if wrong:
            raise ValueError(
                f"'{wrong[0]}' is not table.column; tag columns as {{dim_customer.email: [pii]}}"
            )
        return tags


def copies_problems(governance: GovernanceConfig, tables: list[str]) -> list[str]:
    """``governance.copies`` entries that name no warehouse table of ``tables`` (the
    dimensions' and facts' targets), one line each."""
    known = [t.lower() for t in tables]
    return [
        f"governance.copies: '{entry}' is not a warehouse table; "
        f"tables: {', '.join(tables) or 'none'}"
        for entry in governance.copies
        if not fnmatch.filter(known, entry.lower())
    ]


def governance_problems(governance: GovernanceConfig) -> list[str]:
    """What the section names that it does not define: a principal's or an inheriting role's
    unknown role, and inheritance cycles; one line each."""
    problems: list[str] = []
    defined = ", ".join(governance.roles) or "none"
    for name, principal in governance.principals.items():
        for role in principal.roles:
            if role not in governance.roles:
                problems.append(
                    f"governance.principals.{name}.roles: '{role}' is not a role; "
                    f"defined: {defined}"
                )
    for name, role_config in governance.roles.items():
        for parent in role_config.inherits:
            if parent not in governance.roles:
                problems.append(
                    f"governance.roles.{name}.inherits: '{parent}' is not a role; "
                    f"defined: {defined}"
                )
    problems += _attribute_problems(governance)
    for cycle in _cycles(governance.roles):
        problems.append(
            f"governance.roles.{cycle[0]}.inherits: roles inherit in a circle "
            f"({' -> '.join(cycle)}); remove one of these inherits"
        )
    return problems


def _attribute_problems(governance: GovernanceConfig) -> list[str]:
    """A principal lacking an attribute that a row filter of one of its roles reads."""
    problems: list[str] = []
    for name, principal in governance.principals.items():
        pending, seen = list(principal.roles), set()
        while pending:
            role = pending.pop()
            if role in seen or role not in governance.roles:
                continue
            seen.add(role)
            pending += governance.roles[role].inherits
            for grant in governance.roles[role].all_grants():
                for attribute in _principal_attributes(grant.row_filter):
                    if attribute not in principal.attributes:
                        problems.append(
                            f"governance.principals.{name}.attributes: role {role}'s row "
                            f"filter on {', '.join(grant.tables)} uses principal.{attribute}; "
                            f"give {name} a {attribute}"
                        )
    return sorted(set(problems))


def _principal_attributes(row_filter: str | None) -> set[str]:
    """The attributes a row filter reads as ``principal.<name>``."""
    if row_filter is None or "principal" not in row_filter.lower():
        return set()
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(row_filter)
    except sqlglot.errors.SqlglotError:
        return set()  # reported by the grant's own check
    return {c.name for c in tree.find_all(exp.Column) if c.table.lower() == "principal"}


def _cycles(roles: dict[str, RoleConfig]) -> list[list[str]]:
    """Each inheritance cycle once, as the path that closes it (a -> b -> a)."""
    found: list[list[str]] = []
    seen: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            if not any(set(cycle) == set(known) for known in found):
                found.append(cycle)
            return
        if name in seen or name not in roles:
            return
        for parent in roles[name].inherits:
            visit(parent, [*path, name])
        seen.add(name)

    for name in roles:
        visit(name, [])
    return found
