"""The extract's datasets: pre-aggregates of the semantic layer's grains (measures.ITEMS and
measures.RETURNS), each a table of the extract file keyed by the business day and the
dimensions the charts group and filter by, holding the sums of the additive measures.

=================== =========================================================================
extract_sales_monthly  extract_sales summed per month (charts with no day-level condition)
extract_sales       item measures per day × product × seller × customer region
extract_customers   item measures per day × customer × category (the consumer charts)
extract_customers_monthly  extract_customers summed per month × customer (the consumer
                    charts with no day or category condition: O(customers × months))
extract_customer_totals  extract_customers_monthly summed over the months (per customer)
extract_returns     return measures per request day × reason × product × seller × regions
extract_cohorts     customers per customer region × first month × month active (the cohort
                    charts with no category or day-level date condition: a few hundred cells)
=================== =========================================================================

A dataset names, per column, the expressions of the semantic layer it stands for (``i.product_id``
and ``p.product_id`` are one column: the join makes them equal), so a chart's query over a
grain can be rewritten onto a dataset column by column (answer.py); a query naming anything
else is not answerable from it. No dataset holds a personal column: customers appear by id
only, so an erasure (``riverbed forget``) has nothing to scrub in an extract.

Every measure a dataset holds is additive (SUM or COUNT over the grain's rows, stored as the
cell's sum): a count distinct (``orders``, ``customers``) is not, and a chart that needs one
is answered live. A cell exists only where the grain has a row, so MIN/MAX of a dimension and
"which groups exist" read the same from a dataset as from the grain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import sqlglot
from sqlglot import exp

from riverbed.config.models import RiverbedConfig
from riverbed.config.personal import personal_columns
from riverbed.serve.semantic.measures import ITEMS, MEASURES, RETURNS, Relation, aggregate

# the warehouse table behind each alias the semantic layer's relations use
ALIASES: dict[str, str] = {
    "i": "fact_order_items_current",
    "o": "fact_order_status_current",
    "c": "dim_customer",
    "p": "dim_product",
    "s": "dim_seller",
    "d": "dim_date",
    "r": "fact_returns_current",
}  # ``ir`` is a derived table: its columns resolve inside it
_DATE = (
    ("date_key", ("d.date_key",)),  # the relation's day key is listed per dataset
    ("year", ("d.year",)),
    ("month", ("d.month",)),
    ("day", ("d.date",)),
)
_ITEM_MEASURES = (
    "revenue",
    "units",
    "items",
    "returns",
    "returned_items",
    "refunds",
    "refunded_items",
    "refund_amount",
)


@dataclass(frozen=True)
class Dataset:
    """A table of the extract: ``columns`` (name, the relation's expressions it stands for:
    the first is how it is computed) and ``measures`` (names of MEASURES, each a column)."""

    name: str
    relation: Relation
    columns: tuple[tuple[str, tuple[str, ...]], ...]
    measures: tuple[str, ...]
    # a coarser rollup of another dataset: its cells are that dataset's summed in the extract
    # (no pass over the warehouse), each of its columns one of that dataset's
    rollup_of: Dataset | None = None
    # a rollup whose cells are not its base's sums: ``derivation``, SQL over ``{rows}`` (its
    # base's cells), where each value of column ``per`` of the base has cells of its own
    # (derive.py keeps it by the changed keys' contributions); stored in ``order``
    derivation: str | None = None
    per: str | None = None
    order: str = "year, month"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def derive(self, rows: str | None = None) -> str:
        """A rollup's cells from its base's (DuckDB SQL on the extract), or from ``rows`` (a
        table or subquery of its base's cells): without the hidden counts (partial.hidden)."""
        assert self.rollup_of is not None
        rows = rows or self.rollup_of.name
        if self.derivation is not None:
            return self.derivation.format(rows=rows)
        names = ", ".join(self.column_names)
        sums = ", ".join(f"SUM({m}) AS {m}" for m in self.measures)
        return f"SELECT {names}, {sums} FROM {rows} GROUP BY ALL"

    def mapping(self) -> dict[tuple[str, str], str]:
        """(alias, column) of the relation -> this dataset's column."""
        return _mapping(self)

    def aggregate(self, days: Sequence[int] | None = None) -> exp.Select:
        """The dataset's rows from the warehouse, all of them or those of ``days``."""
        return _aggregate(self, None if days is None else tuple(days))

    def sources(self) -> dict[str, set[str]]:
        """The warehouse columns the dataset is computed from, by table: a principal's
        grant must show each of them in clear for the dataset to answer for it."""
        return _sources(self)


@cache
def _mapping(dataset: Dataset) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, sources in dataset.columns:
        for source in sources:
            alias, column = source.split(".")
            found[(alias, column)] = name
    return found


def _aggregate(dataset: Dataset, days: tuple[int, ...] | None) -> exp.Select:
    columns: list[exp.Expr] = [
        exp.alias_(_expr(sources[0]), name) for name, sources in dataset.columns
    ]
    columns += [exp.alias_(aggregate(MEASURES[m]), m) for m in dataset.measures]
    read = {c.table for column in columns for c in column.find_all(exp.Column)}
    joins = "".join(join for alias, join in dataset.relation.optional if alias in read)
    select = sqlglot.parse_one(f"SELECT 1 FROM {dataset.relation.from_sql}{joins}", read="duckdb")
    assert isinstance(select, exp.Select)
    select.set("expressions", columns)
    if days is not None:
        day_key = _expr(dataset.relation.day_key)
        select = select.where(
            exp.In(this=day_key, expressions=[exp.Literal.number(d) for d in days])
        )
    return select.group_by(*(exp.Literal.number(i + 1) for i in range(len(dataset.columns))))


@cache
def _sources(dataset: Dataset) -> dict[str, set[str]]:
    if dataset.rollup_of is not None:
        return _sources(dataset.rollup_of)
    found: dict[str, set[str]] = {}
    for column in dataset.aggregate().find_all(exp.Column):
        table = _table_of(column)
        if table is not None:
            found.setdefault(table, set()).add(column.name)
    return found


def personal_held(config: RiverbedConfig) -> list[str]:
    """Dataset columns that would hold personal data (riverbed.config.personal: a table's
    ``pii`` columns and those tagged ``pii``), as ``dataset.column (table.column)``: a refresh
    refuses to extract them, so no extract ever needs scrubbing."""
    personal = {
        (cfg.target.lower(), column.lower())
        for name, cfg in config.tables.items()
        for column in personal_columns(config, name)
    }
    found = []
    for dataset in DATASETS:
        for (alias, column), name in dataset.mapping().items():
            table = ALIASES.get(alias, "")
            if (table.removesuffix("_current"), column) in personal or (table, column) in personal:
                found.append(f"{dataset.name}.{name} ({table}.{column})")
    return found


def _table_of(column: exp.Column) -> str | None:
    """The warehouse table ``column`` reads: by its alias, or the FROM of its own SELECT."""
    if column.table:
        return ALIASES.get(column.table)
    select = column.find_ancestor(exp.Select)
    source = select.args.get("from_") or select.args.get("from") if select else None
    table = source.this if source is not None else None
    return table.name if isinstance(table, exp.Table) else None


_PRODUCT = (
    ("product_id", ("p.product_id", "i.product_id")),
    ("product", ("p.name",)),
    ("category", ("p.category",)),
)
_SELLER = (
    ("seller_id", ("s.seller_id", "i.seller_id")),
    ("seller", ("s.name",)),
    ("seller_region", ("s.region",)),
)

_CUSTOMER = (
    ("customer_id", ("c.customer_id", "o.customer_id")),
    ("customer_region", ("c.region",)),
)

SALES = Dataset(
    "extract_sales",
    ITEMS,
    (
        ("date_key", ("i.date_key", "d.date_key")),
        *_DATE[1:],
        *_PRODUCT,
        *_SELLER,
        ("customer_region", ("c.region",)),
    ),
    _ITEM_MEASURES,
)
CUSTOMERS = Dataset(
    "extract_customers",
    ITEMS,
    (
        ("date_key", ("i.date_key", "d.date_key")),
        *_DATE[1:],
        *_CUSTOMER,
        ("category", ("p.category",)),
    ),
    _ITEM_MEASURES,
)
RETURNED = Dataset(
    "extract_returns",
    RETURNS,
    (
        ("date_key", ("r.date_key", "d.date_key")),
        *_DATE[1:],
        ("reason", ("r.reason",)),
        *_PRODUCT,
        *_SELLER,
        ("customer_region", ("c.region",)),
    ),
    ("return_requests", "return_refunds", "return_refund_amount"),
)

SALES_MONTHLY = Dataset(
    "extract_sales_monthly",
    ITEMS,
    (*_DATE[1:3], *_PRODUCT, *_SELLER, ("customer_region", ("c.region",))),
    _ITEM_MEASURES,
    rollup_of=SALES,
)

# each customer's months: what the consumer charts read (first month, months active, what
# they spent) without a category or a day-level date condition, a few rows per customer
# instead of one per day and category ordered
CUSTOMERS_MONTHLY = Dataset(
    "extract_customers_monthly",
    ITEMS,
    (*_DATE[1:3], *_CUSTOMER),
    _ITEM_MEASURES,
    rollup_of=CUSTOMERS,
)

# what each customer spent, returned and was refunded over all months: the spending
# distribution with no date or category condition, a row per customer (derive.py keeps it by
# its base's delta, as every additive rollup)
CUSTOMER_TOTALS = Dataset(
    "extract_customer_totals",
    ITEMS,
    _CUSTOMER,
    _ITEM_MEASURES,
    rollup_of=CUSTOMERS_MONTHLY,
    order="customer_region, customer_id",
)

# how many customers of each first month (under no category) ordered in each month: what the
# cohort charts count (extracts/cohorts.py answers them from it). A customer's first month
# depends on every month of theirs, so its cells are derived from the per-customer months,
# the changed customers' contributions taken away and added again at a refresh (derive.py)
COHORTS = Dataset(
    "extract_cohorts",
    ITEMS,
    (("customer_region", ("c.region",)), ("first_index", ()), ("month_index", ())),
    ("customers",),
    rollup_of=CUSTOMERS_MONTHLY,
    derivation=(
        "SELECT customer_region, first_index, month_index, COUNT(*) AS customers,"
        " COUNT(*) AS _rows FROM (SELECT customer_region, year * 12 + month - 1 AS month_index,"
        " MIN(year * 12 + month - 1) OVER (PARTITION BY customer_id) AS first_index"
        " FROM {rows}) GROUP BY ALL"
    ),
    per="customer_id",
    order="customer_region, first_index, month_index",
)

# in the order a query tries them: the smallest that can answer it first (extract_cohorts
# last: only the cohort rule reads it, each other query is answered by one before it; it is
# derived after the per-customer months it is made of: derive.py orders bases first)
DATASETS: tuple[Dataset, ...] = (
    SALES_MONTHLY,
    SALES,
    RETURNED,
    CUSTOMER_TOTALS,
    CUSTOMERS_MONTHLY,
    CUSTOMERS,
    COHORTS,
)
FORMAT = 2  # bumped when the extract's own layout changes: a full rebuild follows


@cache
def fingerprint() -> str:
    """What the datasets are, as a digest: a refresh of an extract made under other
    definitions (a measure changed, a column added) rebuilds it whole."""
    text = "\n".join(
        f"{FORMAT}:{d.name}:{d.derive() if d.rollup_of else d.aggregate().sql(dialect='duckdb')}"
        for d in DATASETS
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _expr(text: str) -> exp.Expr:
    return sqlglot.parse_one(text, read="duckdb")
