"""The cohort charts' rule (riverbed.serve.extracts.cohorts): their query is read from
``extract_cohorts`` exactly when it is theirs under filters that dataset honours (a region,
whole months), and left to the rollup rules (the per-day dataset) otherwise. The answers
themselves are compared with the live ones and the source in test_extracts.py.
"""

from __future__ import annotations

from datetime import date

import pytest
import sqlglot
from sqlglot import exp

from riverbed.serve.extracts.cohorts import rewrite
from riverbed.serve.extracts.datasets import COHORTS, DATASETS
from riverbed.serve.semantic.consumers import cohort_ctes
from riverbed.serve.semantic.filters import Filters


def _query(filters: Filters, outer: str = "SELECT * FROM counts JOIN sizes USING (first_index)"):
    select = sqlglot.parse_one(outer, read="duckdb")
    assert isinstance(select, exp.Select)
    for name, cte in cohort_ctes(filters):
        select = select.with_(name, as_=cte)
    return select


def _tables(tree: exp.Expr) -> set[str]:
    return {t.name for t in tree.find_all(exp.Table)} - {"counts", "sizes"}


@pytest.mark.parametrize(
    "filters",
    [
        Filters(),
        Filters(region="Europe"),
        Filters(date_from=date(2025, 2, 1), date_to=date(2025, 4, 30)),
        Filters(date_from=date(2024, 12, 1), region="Asia Pacific"),
        Filters(date_to=date(2024, 2, 29)),
    ],
)
def test_region_and_whole_months_read_the_cohort_counts(filters: Filters) -> None:
    rewritten = rewrite(_query(filters), DATASETS)
    assert rewritten is not None
    tree, used = rewritten
    assert used == [COHORTS.name] and _tables(tree) == {COHORTS.name}
    sql = tree.sql(dialect="duckdb")
    assert ("'Europe'" in sql) == (filters.region == "Europe")
    if filters.date_from == date(2025, 2, 1):  # months 2025-02 .. 2025-04 as indexes
        assert f">= {2025 * 12 + 1}" in sql and f"<= {2025 * 12 + 3}" in sql
    if filters.date_to == date(2024, 2, 29):
        assert f"<= {2024 * 12 + 1}" in sql


@pytest.mark.parametrize(
    "filters",
    [
        Filters(date_from=date(2025, 2, 3)),  # a range that cuts a month: the per-day dataset
        Filters(date_to=date(2025, 2, 27)),
        Filters(category="Books"),  # a customer's first month in a category is another
        Filters(seller=3),
        Filters(customer=7, region="Europe"),
    ],
)
def test_other_filters_are_left_to_the_finer_datasets(filters: Filters) -> None:
    assert rewrite(_query(filters), DATASETS) is None


def test_only_the_charts_own_query_is_rewritten() -> None:
    assert rewrite(_query(Filters()), [d for d in DATASETS if d is not COHORTS]) is None
    assert (
        rewrite(
            _query(Filters(), "SELECT * FROM counts JOIN activity USING (month_index)"), DATASETS
        )
        is None
    )
    changed = _query(Filters())
    sizes = next(c for c in changed.args["with_"].expressions if c.alias == "sizes")
    sizes.set("this", sqlglot.parse_one("SELECT first_index, 1 AS cohort_size FROM firsts"))
    assert rewrite(changed, DATASETS) is None
    # firsts under a region that activity does not have: not the charts' query
    mixed = _query(Filters())
    firsts = next(c for c in mixed.args["with_"].expressions if c.alias == "firsts")
    firsts.set("this", cohort_ctes(Filters(region="Europe"))[1][1])
    assert rewrite(mixed, DATASETS) is None
