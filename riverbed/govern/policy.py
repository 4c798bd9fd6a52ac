"""The resolved policy: what one principal may read of one warehouse table.

``Policy.from_config`` flattens riverbed.yaml's ``governance:`` (riverbed.config.governance)
and the tables' ``pii`` settings into lookups; ``Policy.access`` answers, for a principal and a
table as the warehouse has it, with a ``TableAccess`` (the granted columns in table order, a
mask per masked column, the row filter) or None: default deny.

How grants combine, decided here once:

- Within one role, the grants naming the table most specifically win (an exact name over a
  glob), the last of them when several do: a role says ``tables: ["*"]`` and then narrows one
  table with a grant of its own.
- Across a principal's roles (its own and all they inherit), the widest access: columns are
  the union, rows the OR of the row filters (a role granting the table unfiltered lets every
  row through), and a column is in clear when any role granting it shows it in clear.
  The union is per table, not per cell: a principal holding a role that sees every row of a
  few columns and another that sees some rows of every column sees every row of every
  column. Give such a principal one role that says what it may see.
- A column's mask: the grant's ``masks``; else, for a column whose table's ``pii`` is
  ``mask`` (shown as ``show_last_4``) or ``redact``, that default, unless the role lists the
  column in ``unmasked``. ``hash``/``tokenize`` PII is stored digested already.
- Every PII column (``tables.<t>.pii``) carries the tag ``pii`` besides those in ``tags:``.

With no principals configured, one principal, ``admin``, holds a role granting every table
and column in clear: the state of a project before it writes a policy.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from sqlglot import exp

from riverbed.config.governance import (
    GovernanceConfig,
    GrantConfig,
    Mask,
    PrincipalConfig,
    RoleConfig,
)
from riverbed.config.models import RiverbedConfig
from riverbed.errors import RiverbedError

ADMIN = "admin"  # the principal there is when governance names none
# tables.<t>.pii methods enforced at query time, and the mask each stands for
PII_MASKS: dict[str, Mask] = {"mask": "show_last_4", "redact": "redact"}
PII_TAG = "pii"


class GovernError(RiverbedError):
    """The gateway refused a query, or cannot govern it: the message says why."""


@dataclass(frozen=True)
class Principal:
    name: str
    roles: tuple[str, ...]  # its own and every role they inherit, each once
    attributes: dict[str, str | int | float | bool]


@dataclass(frozen=True)
class TableAccess:
    """What a principal reads of one table: ``columns`` (granted, in the table's order),
    ``masks`` (column: mask) and ``row_filter`` (None: every row), still naming
    ``principal.<attribute>`` where it does (the gateway binds them)."""

    table: str
    columns: tuple[str, ...]
    masks: dict[str, Mask]
    row_filter: str | None


class Policy:
    """riverbed.yaml's governance, resolved for lookups."""

    def __init__(
        self,
        governance: GovernanceConfig,
        pii: dict[str, dict[str, str]],
        tags: dict[str, set[str]],
    ):
        self._roles = governance.roles
        self._principals = governance.principals
        self._pii = pii  # warehouse table (lower case): column: pii method
        self._tags = tags  # table.column (lower case): tags

    @classmethod
    def from_config(cls, config: RiverbedConfig) -> Policy:
        governance = config.governance
        if not governance.principals:
            everything = RoleConfig(grants=[GrantConfig(tables=["*"])], unmasked=["*"])
            governance = GovernanceConfig(
                tags=governance.tags,
                roles={ADMIN: everything},
                principals={ADMIN: PrincipalConfig(roles=[ADMIN])},
            )
        pii: dict[str, dict[str, str]] = {}
        tags: dict[str, set[str]] = {}
        for table in config.tables.values():
            for column, method in table.pii.items():
                pii.setdefault(table.target.lower(), {})[column.lower()] = method
                tags.setdefault(f"{table.target}.{column}".lower(), set()).add(PII_TAG)
        for key, names in governance.tags.items():
            tags.setdefault(key.lower(), set()).update(names)
        return cls(governance, pii, tags)

    @property
    def principal_names(self) -> list[str]:
        return list(self._principals)

    def principal_config(self, name: str) -> PrincipalConfig | None:
        """The principal's own config (its credentials: govern apply sets its password)."""
        return self._principals.get(name)

    def principal(self, name: str) -> Principal:
        """The principal ``name``, with every role it holds; GovernError if there is none."""
        config = self._principals.get(name)
        if config is None:
            known = ", ".join(self._principals) or "none"
            raise GovernError(
                f"no principal named {name}; principals in governance.principals: {known}"
            )
        roles: list[str] = []
        pending = list(config.roles)
        while pending:  # the config refused cycles and unknown roles
            role = pending.pop(0)
            if role not in roles:
                roles.append(role)
                pending += self._roles[role].inherits
        return Principal(name, tuple(roles), dict(config.attributes))

    def access(self, principal: Principal, table: str, columns: list[str]) -> TableAccess | None:
        """What ``principal`` reads of ``table`` (whose columns are ``columns``, in order);
        None when no role grants it."""
        granted: dict[str, Mask | None] = {}  # column: its mask, None in clear
        filters: list[str | None] = []
        for role_name in principal.roles:
            role = self._roles[role_name]
            grant = _winning_grant(role.all_grants(), table)
            if grant is None:
                continue
            filters.append(grant.row_filter)
            for column in self._granted_columns(grant, table, columns):
                mask = self._mask(role, grant, table, column)
                if column not in granted or mask is None:
                    granted[column] = mask
                # a column masked by two roles keeps the first role's mask
        if not filters:
            return None
        row_filter = None if None in filters else " OR ".join(f"({f})" for f in filters)
        if row_filter is not None and len(filters) == 1:
            row_filter = filters[0]
        ordered = tuple(c for c in columns if c in granted)
        masks = {c: m for c in ordered if (m := granted[c]) is not None}
        return TableAccess(table, ordered, masks, row_filter)

    def _granted_columns(self, grant: GrantConfig, table: str, columns: list[str]) -> list[str]:
        spec = grant.columns
        if spec is None:
            return list(columns)
        if spec.include is not None:
            wanted = {c.lower() for c in spec.include}
            return [c for c in columns if c.lower() in wanted]
        if spec.exclude is not None:
            unwanted = {c.lower() for c in spec.exclude}
            return [c for c in columns if c.lower() not in unwanted]
        hidden = set(spec.exclude_tags or [])
        return [c for c in columns if not self._tags.get(f"{table}.{c}".lower(), set()) & hidden]

    def _mask(self, role: RoleConfig, grant: GrantConfig, table: str, column: str) -> Mask | None:
        for name, mask in grant.masks.items():
            if name.lower() == column.lower():
                return mask
        method = self._pii.get(table.lower(), {}).get(column.lower())
        if method not in PII_MASKS:
            return None
        key = f"{table}.{column}".lower()
        if any(fnmatch.fnmatchcase(key, pattern.lower()) for pattern in role.unmasked):
            return None
        return PII_MASKS[method]


def _winning_grant(grants: list[GrantConfig], table: str) -> GrantConfig | None:
    """The grant for ``table`` among one role's: the most specific, the last of equals."""
    best: GrantConfig | None = None
    best_rank = 0
    name = table.lower()
    for grant in grants:
        rank = 0
        for pattern in grant.tables:
            if pattern.lower() == name:
                rank = max(rank, 2)
            elif fnmatch.fnmatchcase(name, pattern.lower()):
                rank = max(rank, 1)
        if rank and rank >= best_rank:
            best, best_rank = grant, rank
    return best


def bind_attributes(predicate: exp.Expr, principal: Principal, where: str) -> exp.Expr:
    """``predicate`` with each ``principal.<attribute>`` replaced by the attribute's value as
    a literal (a node of the tree, never text pasted into SQL). ``where`` names the filter
    for the message when the principal lacks an attribute."""

    def bind(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.table.lower() == "principal":
            attribute = node.name
            if attribute not in principal.attributes:
                raise GovernError(
                    f"principal {principal.name} has no attribute {attribute} ({where} uses "
                    f"principal.{attribute}); add it under governance.principals."
                    f"{principal.name}.attributes"
                )
            value = principal.attributes[attribute]
            if isinstance(value, bool):
                return exp.Boolean(this=value)
            if isinstance(value, (int, float)):
                return exp.Literal.number(value)
            return exp.Literal.string(value)
        return node

    return predicate.transform(bind)
