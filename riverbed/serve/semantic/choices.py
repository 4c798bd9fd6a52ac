"""The values a dashboard's filter offers (its form's list of regions): every value of the
dimension the reader may see, read from the dimension's current rows through the gateway as
any read is (a row filter narrows them, a mask shows masked, the read is audited).

Not from a chart's rows: those are what the chart shows, a ranking's top (customer_refunds'
hundred most refunded customers) or rows already narrowed by the page's own filters (the seller
table under a region filter holds that region's sellers only), so a region none of them fell
in would never be offered.
"""

from __future__ import annotations

from sqlglot import exp

from riverbed.config import Project
from riverbed.serve.queries import query_as
from riverbed.serve.semantic.measures import dimension
from riverbed.state.records import AuditPath

# the filters' dimensions that offer their values: the table each is read from, under the
# alias measures.DIMENSIONS writes it with
CHOICES: dict[str, tuple[str, str]] = {
    "customer_region": ("dim_customer", "c"),
    "seller_region": ("dim_seller", "s"),  # the seller page's region is the seller's
}


def choices(project: Project, principal: str, name: str, path: AuditPath = "api") -> list[str]:
    """The values of dimension ``name`` (one of CHOICES) ``principal`` may see, sorted."""
    table, alias = CHOICES[name]
    value = dimension(name)
    select = (
        exp.select(exp.alias_(value, "value"))
        .distinct()
        .from_(exp.to_table(table).as_(alias))
        .where(exp.column("is_current_record", alias))
        .where(value.copy().is_(exp.null()).not_())
        .order_by("1")
    )
    sql = select.sql(dialect=project.config.warehouse.engine)
    found: list[str] = []
    for batch in query_as(project, principal, sql, path=path):
        found += [str(v) for v in batch.column(0).to_pylist() if v is not None]
    return found
