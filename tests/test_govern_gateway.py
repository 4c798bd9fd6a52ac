"""The gateway's name resolution, without a warehouse: which references are CTEs and which are
tables (a CTE shadows a table only where it is in scope), and what a refusal or a rewrite says."""

from __future__ import annotations

import pytest

from riverbed.config.loader import parse_config
from riverbed.govern.gateway import Catalog, govern
from riverbed.govern.policy import Policy

POLICY = """
governance:
  roles: {r: {grants: [{tables: [dim_customer], row_filter: "region = principal.region"}]}}
  principals: {e: {roles: [r], attributes: {region: "EU'; drop table payroll; --"}}}
"""
TABLES = {"dim_customer": {"id": "BIGINT", "region": "VARCHAR"}, "payroll": {"salary": "INTEGER"}}


def governed(sql: str, dialect: str = "duckdb") -> tuple[bool, str]:
    policy = Policy.from_config(parse_config(POLICY, "riverbed.yaml"))
    schema = "main" if dialect == "duckdb" else "public"
    decision = govern(policy, policy.principal("e"), sql, Catalog(dialect, "wh", schema, TABLES))
    return decision.allowed, decision.reason or decision.sql


@pytest.mark.parametrize(
    "sql",
    [
        # a CTE named like a table: its own body reads the real (governed) table
        "with dim_customer as (select * from dim_customer) select * from dim_customer",
        "with payroll as (select 1 as x) select * from payroll",
        "with payroll as (select 1 as x) select * from (with q as (select * from payroll)"
        " select * from q) s",
        "with recursive payroll(n) as (select 1 union all select n + 1 from payroll where n < 3)"
        " select * from payroll",
    ],
)
def test_ctes_in_scope_shadow_tables(sql: str) -> None:
    allowed, said = governed(sql)
    assert allowed, said
    assert '"payroll"' not in said


@pytest.mark.parametrize(
    "sql",
    [
        "with a as (select * from payroll), payroll as (select 1) select * from a",  # later
        "select * from (with payroll as (select 1) select * from payroll) s, payroll",  # outside
        "with dim_customer as (select * from payroll) select * from dim_customer",
    ],
)
def test_a_cte_out_of_scope_shadows_nothing(sql: str) -> None:
    assert governed(sql) == (False, "table payroll does not exist")


def test_attributes_are_literals_in_the_tree_not_pasted_text() -> None:
    for dialect in ("duckdb", "postgres"):
        allowed, sql = governed("select * from dim_customer", dialect)
        assert allowed
        assert "WHERE region = 'EU''; drop table payroll; --'" in sql, sql
