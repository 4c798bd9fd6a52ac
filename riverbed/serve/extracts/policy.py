"""Governance on the extract: the warehouse policy mapped onto the datasets, so the gateway
governs a query on the extract exactly as it governs one on the tables.

A dataset is computed from warehouse tables (datasets.Dataset.sources); a principal may read
it only as those tables allow, so for each dataset and principal:

* every source table must be granted (default deny: a principal without a grant on one of
  them gets no grant on the dataset, and the chart goes live, where the gateway refuses it);
* every source column the dataset is computed from must be granted and in clear (a mask or a
  column left out cannot be honoured on a sum: live);
* each source table's row filter becomes a filter on the dataset, its columns renamed to the
  dataset's (the EU analyst's ``region = principal.region`` on dim_customer becomes
  ``customer_region = principal.region``); filters of several tables are ANDed, as the
  grain's inner joins AND them. A filter naming a column the dataset lacks cannot be
  expressed: no grant, live.

The result is a Policy of one role per principal granting the datasets it may read, with
those filters; the gateway binds ``principal.<attribute>`` as it does for tables.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from riverbed.config.governance import GovernanceConfig, GrantConfig, PrincipalConfig, RoleConfig
from riverbed.govern.policy import Policy, Principal
from riverbed.serve.extracts.datasets import ALIASES, Dataset

_ROLE = "extract_reader"


def mapped_policy(
    policy: Policy,
    principal: Principal,
    datasets: tuple[Dataset, ...],
    sources: dict[str, list[str]],
    dialect: str,
) -> Policy | None:
    """The policy of ``principal`` on the datasets it may read from the extract (None: none);
    ``sources``: each source table's columns, in order, as the extract recorded them."""
    grants = []
    for dataset in datasets:
        allowed, row_filter = _dataset_grant(policy, principal, dataset, sources, dialect)
        if allowed:
            grants.append(GrantConfig(tables=[dataset.name], row_filter=row_filter))
    if not grants:
        return None
    governance = GovernanceConfig(
        roles={_ROLE: RoleConfig(grants=grants)},
        principals={
            principal.name: PrincipalConfig(roles=[_ROLE], attributes=principal.attributes)
        },
    )
    return Policy(governance, {}, {})


def _dataset_grant(
    policy: Policy,
    principal: Principal,
    dataset: Dataset,
    sources: dict[str, list[str]],
    dialect: str,
) -> tuple[bool, str | None]:
    """(may read ``dataset``, its row filter)."""
    renamed = {
        (ALIASES[alias], column): name
        for (alias, column), name in dataset.mapping().items()
        if alias in ALIASES
    }
    filters: list[exp.Expr] = []
    for table, needed in dataset.sources().items():
        if table not in sources:
            return False, None
        access = policy.access(principal, table, sources[table])
        if access is None or not needed <= set(access.columns) or needed & set(access.masks):
            return False, None
        if access.row_filter is not None:
            mapped = _renamed(access.row_filter, table, renamed, dialect)
            if mapped is None:
                return False, None
            filters.append(mapped)
    if not filters:
        return True, None
    return True, exp.and_(*(exp.Paren(this=f) for f in filters)).sql(dialect="duckdb")


def _renamed(
    row_filter: str, table: str, renamed: dict[tuple[str, str], str], dialect: str
) -> exp.Expr | None:
    """``row_filter`` of ``table`` over the dataset's columns, or None if it names another."""
    tree = sqlglot.parse_one(row_filter, read=dialect)
    for column in list(tree.find_all(exp.Column)):
        if column.table.lower() == "principal":
            continue
        if column.table and column.table.lower() != table.lower():
            return None
        name = renamed.get((table, column.name.lower()))
        if name is None:
            return None
        column.replace(exp.column(name))
    if tree.find(exp.Select):  # a subquery in a filter reads other tables: not on a dataset
        return None
    return tree
