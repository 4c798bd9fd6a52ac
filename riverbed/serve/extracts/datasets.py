"""The extract's datasets: pre-aggregates of the semantic layer's grains (measures.ITEMS and
measures.RETURNS), each a table of the extract file keyed by the business day and the
dimensions the charts group and filter by, holding the sums of the additive measures.

=================== =========================================================================
extract_sales_monthly  extract_sales summed per month (charts with no day-level condition)
extract_sales       item measures per day × product × seller × customer region
extract_customers   item measures per day × customer × category (the consumer charts)
extract_customers_monthly  extract_customers summed per month × customer (the consumer
                    charts with no day or category condition: O(customers × months))
extract_customer_totals  extract_customer_orders_monthly summed over the months (per
                    customer, distinct orders included: an order has one day and one
                    customer): customer_refunds and the spending distribution with no date or
                    category condition, a row per customer
extract_returns     return measures per request day × reason × product × seller × regions
extract_seller_orders(_monthly)  item measures and distinct orders per day (month) × seller ×
                    customer region: the seller table (seller_performance)
extract_seller_category_orders(_monthly)  the same × category (the seller table of a category)
extract_customer_orders(_monthly)  item measures and distinct orders per day (month) ×
                    customer (transaction_counts, customer_refunds)
extract_cohorts     customers per customer region × first month × month active (the cohort
                    charts with no category or day-level date condition: a few hundred cells)
=================== =========================================================================

A dataset names, per column, the expressions of the semantic layer it stands for (``i.product_id``
and ``p.product_id`` are one column: the join makes them equal), so a chart's query over a
grain can be rewritten onto a dataset column by column (answer.py); a query naming anything
else is not answerable from it. No dataset holds a personal column: customers appear by id
only, so an erasure (``riverbed forget``) has nothing to scrub in an extract.

Every measure a dataset holds is additive (SUM or COUNT over the grain's rows, stored as the
cell's sum) but ``orders``, a count distinct, held as each cell's own count. Distinct orders
still add up where no order can fall in two of the cells summed: the order-level columns
(``ORDER_LEVEL``: its customer and their region, and its day while no live order's items span
two days, which split_orders.py keeps watch of) never split an order, the item-level ones
(product, category, seller) can. So rollup.py sums ``orders`` only over cells that differ in
order-level columns alone (every item-level column grouped by or pinned), and a rollup
(``rollup_of``) holding ``orders`` may drop order-level columns only (checked when defined).
A count distinct of a column a dataset holds (``customers``: ``customer_id``) is the same
count over its cells. A cell exists only where the grain has a row, so MIN/MAX of a
dimension and "which groups exist" read the same from a dataset as from the grain.
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
DATE_COLUMNS = (
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


# a column read from these never splits an order: one order, one customer (and region), one
# status row; its day too while split_orders.py finds no live order over two days
_ORDER_ALIASES = ("o", "c", "d")
ORDER_LEVEL = frozenset({"i.order_id", "i.date_key"})
# the key of each dimension whose current row the relations join: its other columns follow it
DIMENSION_KEYS = {"p": "product_id", "s": "seller_id", "c": "customer_id"}


def order_level(source: str) -> bool:
    """Whether the relation's column ``source`` (``alias.column``) is the same for every item
    of an order."""
    return source in ORDER_LEVEL or source.split(".")[0] in _ORDER_ALIASES


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

    def __post_init__(self) -> None:
        base = self.rollup_of
        distinct = [m for m in self.measures if not MEASURES[m].additive]
        if base is not None and distinct and self.derivation is None:
            dropped = set(base.splits_orders) - set(self.splits_orders)
            if dropped:  # summing them would count an order once per value of those
                raise ValueError(f"{self.name} sums {distinct} over {sorted(dropped)}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def splits_orders(self) -> tuple[str, ...]:
        """Its item-level columns: those whose value may differ between items of an order."""
        return tuple(name for name, sources in self.columns if not any(map(order_level, sources)))

    def key_of(self, name: str) -> str | None:
        """The column holding the key of the dimension row column ``name`` is read from
        (``seller`` -> ``seller_id``): one value of it is one value of ``name``."""
        alias = dict(self.columns)[name][0].split(".")[0]
        key = DIMENSION_KEYS.get(alias)
        return None if key is None else self.mapping().get((alias, key))

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
        *DATE_COLUMNS[1:],
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
        *DATE_COLUMNS[1:],
        *_CUSTOMER,
        ("category", ("p.category",)),
    ),
    (*_ITEM_MEASURES, "orders"),  # a customer's orders in one category: category pinned
)
RETURNED = Dataset(
    "extract_returns",
    RETURNS,
    (
        ("date_key", ("r.date_key", "d.date_key")),
        *DATE_COLUMNS[1:],
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
    (*DATE_COLUMNS[1:3], *_PRODUCT, *_SELLER, ("customer_region", ("c.region",))),
    _ITEM_MEASURES,
    rollup_of=SALES,
)

# each customer's months: what the consumer charts read (first month, months active, what
# they spent) without a category or a day-level date condition, a few rows per customer
# instead of one per day and category ordered
CUSTOMERS_MONTHLY = Dataset(
    "extract_customers_monthly",
    ITEMS,
    (*DATE_COLUMNS[1:3], *_CUSTOMER),
    _ITEM_MEASURES,
    rollup_of=CUSTOMERS,
)

# distinct orders (and the item measures beside them) at the grains the seller table and the
# per-customer charts count them at: a seller's orders are summed over days and customer
# regions only, a category's over those and nothing else, a customer's over days
_DAY = (("date_key", ("i.date_key", "d.date_key")), *DATE_COLUMNS[1:])
_WITH_ORDERS = (*_ITEM_MEASURES, "orders")
SELLER_ORDERS = Dataset(
    "extract_seller_orders",
    ITEMS,
    (*_DAY, *_SELLER, ("customer_region", ("c.region",))),
    _WITH_ORDERS,
)
SELLER_CATEGORY_ORDERS = Dataset(
    "extract_seller_category_orders",
    ITEMS,
    (*_DAY, *_SELLER, ("category", ("p.category",)), ("customer_region", ("c.region",))),
    _WITH_ORDERS,
)
CUSTOMER_ORDERS = Dataset("extract_customer_orders", ITEMS, (*_DAY, *_CUSTOMER), _WITH_ORDERS)


def _monthly(base: Dataset) -> Dataset:
    """``base`` summed per month: its columns but the day's."""
    columns = tuple(c for c in base.columns if c[0] not in ("date_key", "day"))
    return Dataset(f"{base.name}_monthly", ITEMS, columns, base.measures, rollup_of=base)


SELLER_ORDERS_MONTHLY = _monthly(SELLER_ORDERS)
SELLER_CATEGORY_ORDERS_MONTHLY = _monthly(SELLER_CATEGORY_ORDERS)
CUSTOMER_ORDERS_MONTHLY = _monthly(CUSTOMER_ORDERS)

# what each customer ordered, spent, returned and was refunded over all months: the spending
# distribution and customer_refunds with no date or category condition, a row per customer
# instead of one per month (derive.py keeps it by its base's delta, as every rollup of sums).
# Of the per-customer months that hold distinct orders, not of the per-category ones, which
# cannot: a customer's orders are the sum of their months' (no order has two customers, nor
# two days while split_orders is empty, which rollup.py asks before it reads a sum of them)
CUSTOMER_TOTALS = Dataset(
    "extract_customer_totals",
    ITEMS,
    _CUSTOMER,
    _WITH_ORDERS,
    rollup_of=CUSTOMER_ORDERS_MONTHLY,
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
    SELLER_ORDERS_MONTHLY,
    SALES_MONTHLY,
    SELLER_CATEGORY_ORDERS_MONTHLY,
    SELLER_ORDERS,
    SALES,
    SELLER_CATEGORY_ORDERS,
    RETURNED,
    CUSTOMER_TOTALS,
    CUSTOMERS_MONTHLY,
    CUSTOMER_ORDERS_MONTHLY,
    CUSTOMER_ORDERS,
    CUSTOMERS,
    COHORTS,
)
FORMAT = 4  # bumped when the extract's own layout changes: a full rebuild follows


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
