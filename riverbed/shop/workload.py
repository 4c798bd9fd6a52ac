"""Live OLTP traffic on the demo shop: what the capture stage has to keep up with.

Each transaction is one business action (an order placed, a batch of shipments, a seller
repricing, a refund ...), from 1 to about 100 rows, with a rare bulk import of 10,000+ rows.
Changes are counted in rows, the unit the CDC stream carries. Statements are set-based (one
``unnest`` insert per table, ``= any(array)`` updates) so a transaction costs a few round trips
whatever its size; ``synchronous_commit = off`` for this session only, because the generator's
own durability does not matter and the WAL order capture sees is the same.

Dirty rows: with probability ``dirty_ratio`` a row that a quality rule could check is written
wrong in a way the schema accepts (null email, unknown country code, ordered_at in the future,
negative quantity, refund above the item's value). The ratio is over those eligible rows.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from riverbed.shop import catalog

# Business actions and their share of transactions.
ACTIONS: dict[str, float] = {
    "place_order": 0.44,
    "advance_orders": 0.18,
    "reprice": 0.07,
    "rewrite_description": 0.025,
    "update_customers": 0.07,
    "signup": 0.04,
    "update_seller": 0.02,
    "add_product": 0.01,
    "request_returns": 0.07,
    "settle_returns": 0.06,
    "delete_something": 0.015,
}
LARGE_TX_ROWS = 10_000
NEXT_STATUS = {"placed": "paid", "paid": "shipped", "shipped": "delivered"}


@dataclass(frozen=True)
class WorkloadSpec:
    rate: float = 1000.0  # target changes (rows) per second; 0 means as fast as possible
    duration: float | None = 60.0  # seconds; None runs until stopped
    dirty_ratio: float = 0.0
    seed: int = 1
    large_every: float = 60.0  # seconds between bulk imports of LARGE_TX_ROWS+ rows


@dataclass
class WorkloadStats:
    changes: Counter[str] = field(default_factory=Counter)  # rows per change type
    dirty: Counter[str] = field(default_factory=Counter)  # dirty rows per kind
    eligible: int = 0  # rows that could have been dirty
    transactions: int = 0
    large_transactions: int = 0
    largest_transaction: int = 0
    toast_updates: int = 0
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.changes.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed if self.elapsed else 0.0

    @property
    def dirty_ratio(self) -> float:
        return sum(self.dirty.values()) / self.eligible if self.eligible else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": dict(self.changes),
            "total_changes": self.total,
            "transactions": self.transactions,
            "large_transactions": self.large_transactions,
            "largest_transaction_rows": self.largest_transaction,
            "toast_updates": self.toast_updates,
            "dirty": dict(self.dirty),
            "dirty_eligible_rows": self.eligible,
            "dirty_ratio": round(self.dirty_ratio, 4),
            "seconds": round(self.elapsed, 2),
            "rate": round(self.rate, 1),
        }


class Workload:
    """Drives the shop with ``spec``; call :meth:`run` once."""

    def __init__(self, conn: psycopg.Connection[Any], spec: WorkloadSpec, schema: str = "shop"):
        if not conn.autocommit:
            raise ValueError(
                "the workload needs an autocommit connection (it opens its own transactions)"
            )
        self.conn = conn
        self.spec = spec
        self.s = schema
        self.rng = random.Random(spec.seed)
        self.stats = WorkloadStats()
        conn.execute("set synchronous_commit = off")
        conn.execute("set application_name = 'riverbed-shop'")
        self._load_state()

    # --- state of the shop the generator keeps in memory ----------------------------------

    def _q(self, query: str) -> sql.Composed:
        return sql.SQL(query).format(s=sql.Identifier(self.s))

    def _rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.conn.execute(self._q(query), params).fetchall()

    def _load_state(self) -> None:
        self.customers = [r[0] for r in self._rows("select customer_id from {s}.customers")]
        if not self.customers:
            raise ValueError("the shop has no customers; run `riverbed shop seed` first")
        self.sellers = [r[0] for r in self._rows("select seller_id from {s}.sellers")]
        products = self._rows(
            "select product_id, seller_id, price from {s}.products where is_active"
        )
        if not products:
            raise ValueError("the shop has no active products; run `riverbed shop seed --reset`")
        self.products = [(p, s) for p, s, _ in products]
        self.price = {p: price for p, _, price in products}
        self.open_orders: dict[str, list[int]] = {status: [] for status in NEXT_STATUS}
        for order_id, status in self._rows(
            "select order_id, status::text from {s}.orders where status in ('placed','paid','shipped')"
            " order by order_id"
        ):
            self.open_orders[status].append(order_id)
        self.returnable: deque[tuple[int, Decimal]] = deque(maxlen=50_000)
        self.returnable.extend(
            self._rows(
                "select i.order_item_id, i.quantity * i.unit_price from {s}.order_items i"
                " join {s}.orders o using (order_id)"
                " where o.status = 'delivered' and i.quantity > 0"
                " and not exists (select 1 from {s}.returns r where r.order_item_id = i.order_item_id)"
                " order by i.order_item_id desc limit 20000"
            )
        )
        self.open_returns: dict[str, list[tuple[int, Decimal]]] = {"requested": [], "approved": []}
        for return_id, status, value in self._rows(
            "select r.return_id, r.status::text, i.quantity * i.unit_price from {s}.returns r"
            " join {s}.order_items i using (order_item_id)"
            " where r.status in ('requested','approved') order by r.return_id"
        ):
            self.open_returns[status].append((return_id, value))
        self.cancelled = [
            r[0]
            for r in self._rows(
                "select order_id from {s}.orders where status = 'cancelled' order by order_id desc limit 2000"
            )
        ]
        self.recent_signups: list[int] = []
        self.described: deque[int] = deque(maxlen=200)  # products with TOAST-sized descriptions

    # --- the loop -------------------------------------------------------------------------

    def run(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        on_progress: Callable[[WorkloadStats], None] | None = None,
    ) -> WorkloadStats:
        spec, stats = self.spec, self.stats
        names = list(ACTIONS)
        weights = list(ACTIONS.values())
        start = time.monotonic()
        next_large = start + spec.large_every
        last_report = start
        try:
            while not should_stop():
                now = time.monotonic()
                if spec.duration is not None and now - start >= spec.duration:
                    break
                if now >= next_large:
                    rows = self._transaction(self.bulk_import)
                    stats.large_transactions += 1
                    next_large = now + spec.large_every
                else:
                    action = self.rng.choices(names, weights)[0]
                    rows = self._transaction(getattr(self, action))
                stats.largest_transaction = max(stats.largest_transaction, rows)
                if spec.rate > 0:
                    # pace on the total so far: a burst (a bulk import) is paid back by waiting
                    ahead = start + stats.total / spec.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(min(ahead, 0.5))
                if on_progress and now - last_report >= 1.0:
                    stats.elapsed = now - start
                    on_progress(stats)
                    last_report = now
        finally:
            # also when the connection is lost: ``self.stats`` then reports what was committed
            stats.elapsed = time.monotonic() - start
        return stats

    def _transaction(self, action: Callable[[], Counter[str]]) -> int:
        with self.conn.transaction():
            changed = action()
        self.stats.changes.update(changed)
        self.stats.transactions += 1
        return sum(changed.values())

    # --- dirty rows -----------------------------------------------------------------------

    def _dirty(self, kind: str, n: int = 1) -> list[bool]:
        """Decide for ``n`` eligible rows of ``kind`` whether each is written dirty."""
        self.stats.eligible += n
        flags = [self.rng.random() < self.spec.dirty_ratio for _ in range(n)]
        hits = sum(flags)
        if hits:
            self.stats.dirty[kind] += hits
        return flags

    def _country(self, dirty: bool) -> tuple[str, str, str]:
        code = self.rng.choice(list(catalog.COUNTRIES))
        region, cities = catalog.COUNTRIES[code]
        city = self.rng.choice(cities)
        if dirty:
            return self.rng.choice(catalog.BAD_COUNTRY_CODES), region, city
        return code, region, city

    # --- actions: each runs inside one transaction and returns rows changed per type -------

    def place_order(self) -> Counter[str]:
        return self._insert_orders(1, self.rng.randint(1, 12))

    def bulk_import(self) -> Counter[str]:
        """A B2B import: 1,700 orders of 5 or 6 items, over LARGE_TX_ROWS rows in one commit."""
        return self._insert_orders(1_700, None)

    def _insert_orders(self, n_orders: int, items_each: int | None) -> Counter[str]:
        rng = self.rng
        now = datetime.now(UTC)
        future = self._dirty("ordered_at_in_future", n_orders)
        customers = [rng.choice(self.customers) for _ in range(n_orders)]
        ordered_at = [now + timedelta(days=rng.randint(1, 30)) if f else now for f in future]
        placed = self.conn.execute(
            self._q(
                "insert into {s}.orders (customer_id, status, ordered_at, updated_at)"
                " select c, 'placed', t, t from unnest(%s::bigint[], %s::timestamptz[]) as u(c, t)"
                " returning order_id, ordered_at"
            ),
            (customers, ordered_at),
        ).fetchall()
        order_ids = [order_id for order_id, _ in placed]
        item_order, item_product, item_seller, quantity, price = [], [], [], [], []
        item_time = []  # an item is created with its order, as the seeded history has it
        for order_id, at in placed:
            for _ in range(items_each or rng.randint(5, 6)):
                product, seller = rng.choice(self.products)
                item_order.append(order_id)
                item_time.append(at)
                item_product.append(product)
                item_seller.append(seller)
                quantity.append(1 if rng.random() < 0.8 else rng.randint(2, 4))
                price.append(self.price[product])
        for i, bad in enumerate(self._dirty("negative_quantity", len(item_order))):
            if bad:
                quantity[i] = -rng.randint(1, 5)
        cur = self.conn.execute(
            self._q(
                "insert into {s}.order_items (order_id, product_id, seller_id, quantity, unit_price, created_at)"
                " select o, p, s, q, u, t from unnest(%s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::int[], %s::numeric[], %s::timestamptz[]) as u(o, p, s, q, u, t)"
            ),
            (item_order, item_product, item_seller, quantity, price, item_time),
        )
        self.open_orders["placed"].extend(order_ids)
        return Counter(order_created=len(order_ids), order_item_created=cur.rowcount)

    def advance_orders(self) -> Counter[str]:
        """A fulfilment batch: orders move one step (or are cancelled before shipping)."""
        status = self.rng.choices(list(NEXT_STATUS), [0.4, 0.35, 0.25])[0]
        pool = self.open_orders[status]
        if not pool:
            return self.place_order()
        take = min(len(pool), self.rng.randint(1, 60))
        batch = pool[:take]
        del pool[:take]
        cancel: list[int] = []
        forward: list[int] = []
        for order_id in batch:
            cancelled = status != "shipped" and self.rng.random() < 0.05
            (cancel if cancelled else forward).append(order_id)
        changed: Counter[str] = Counter()
        if forward:
            target = NEXT_STATUS[status]
            cur = self.conn.execute(
                self._q("update {s}.orders set status = %s where order_id = any(%s)"),
                (target, forward),
            )
            changed["order_status_changed"] += cur.rowcount
            if target == "delivered":
                self.returnable.extend(
                    self._rows(
                        "select order_item_id, quantity * unit_price from {s}.order_items"
                        " where order_id = any(%s) and quantity > 0",
                        (forward,),
                    )
                )
            else:
                self.open_orders[target].extend(forward)
        if cancel:
            cur = self.conn.execute(
                self._q("update {s}.orders set status = 'cancelled' where order_id = any(%s)"),
                (cancel,),
            )
            changed["order_status_changed"] += cur.rowcount
            self.cancelled.extend(cancel)
        return changed

    def reprice(self) -> Counter[str]:
        """A seller reprices some products; often one whose long description is TOASTed, so the
        update carries that column as 'unchanged TOAST' in the replication stream."""
        n = self.rng.randint(1, 40)
        picks = [self.rng.choice(self.products)[0] for _ in range(n)]
        if self.described and self.rng.random() < 0.5:
            picks[0] = self.rng.choice(self.described)
        prices = {}
        for product in picks:
            factor = Decimal(str(round(self.rng.uniform(0.9, 1.1), 3)))
            prices[product] = max(
                Decimal("1.00"), (self.price[product] * factor).quantize(Decimal("0.01"))
            )
        cur = self.conn.execute(
            self._q(
                "update {s}.products p set price = u.price from unnest(%s::bigint[], %s::numeric[])"
                " as u(id, price) where p.product_id = u.id"
            ),
            (list(prices), list(prices.values())),
        )
        self.price.update(prices)
        return Counter(price_changed=cur.rowcount)

    def rewrite_description(self) -> Counter[str]:
        """A long, varied description: large enough to be stored out of line (TOAST)."""
        product = self.rng.choice(self.products)[0]
        words = self.rng.randint(1_500, 3_000)
        letters = "abcdefghijklmnopqrstuvwxyz"
        text = " ".join(
            "".join(self.rng.choices(letters, k=self.rng.randint(3, 9))) for _ in range(words)
        )
        cur = self.conn.execute(
            self._q("update {s}.products set description = %s where product_id = %s"),
            (text, product),
        )
        self.described.append(product)
        self.stats.toast_updates += cur.rowcount
        return Counter(description_changed=cur.rowcount)

    def update_customers(self) -> Counter[str]:
        changed: Counter[str] = Counter()
        for _ in range(self.rng.randint(1, 5)):
            customer = self.rng.choice(self.customers)
            if self.rng.random() < 0.5:
                (bad,) = self._dirty("null_email")
                email = None if bad else f"user{customer}.{self.rng.randint(1, 10**6)}@example.org"
                cur = self.conn.execute(
                    self._q("update {s}.customers set email = %s where customer_id = %s"),
                    (email, customer),
                )
                changed["customer_email_changed"] += cur.rowcount
            else:
                (bad,) = self._dirty("unknown_country")
                country, region, city = self._country(bad)
                cur = self.conn.execute(
                    self._q(
                        "update {s}.customers set city = %s, country = %s, region = %s"
                        " where customer_id = %s"
                    ),
                    (city, country, region, customer),
                )
                changed["customer_address_changed"] += cur.rowcount
        return changed

    def signup(self) -> Counter[str]:
        n = self.rng.randint(1, 3)
        rows = []
        for bad_email, bad_country in zip(
            self._dirty("null_email", n), self._dirty("unknown_country", n)
        ):
            first, last = self.rng.choice(catalog.FIRST_NAMES), self.rng.choice(catalog.LAST_NAMES)
            country, region, city = self._country(bad_country)
            email = (
                None
                if bad_email
                else f"{first.lower()}.{last.lower()}{self.rng.randint(1, 10**7)}@example.com"
            )
            rows.append(
                (
                    email,
                    f"{first} {last}",
                    f"+1-555-{self.rng.randint(10**6, 10**7 - 1)}",
                    city,
                    country,
                    region,
                )
            )
        cols = [list(column) for column in zip(*rows)]
        ids = [
            r[0]
            for r in self.conn.execute(
                self._q(
                    "insert into {s}.customers (email, full_name, phone, city, country, region)"
                    " select * from unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                    " returning customer_id"
                ),
                cols,
            ).fetchall()
        ]
        self.customers.extend(ids)
        self.recent_signups.extend(ids)
        return Counter(customer_created=len(ids))

    def update_seller(self) -> Counter[str]:
        seller = self.rng.choice(self.sellers)
        (bad,) = self._dirty("unknown_country")
        country, region, city = self._country(bad)
        name = f"{self.rng.choice(catalog.SELLER_WORDS)} {self.rng.choice(catalog.SELLER_SUFFIXES)}"
        cur = self.conn.execute(
            self._q(
                "update {s}.sellers set name = %s, city = %s, country = %s, region = %s"
                " where seller_id = %s"
            ),
            (name, city, country, region, seller),
        )
        return Counter(seller_changed=cur.rowcount)

    def add_product(self) -> Counter[str]:
        category = self.rng.choice(catalog.CATEGORIES)
        seller = self.rng.choice(self.sellers)
        name = f"{self.rng.choice(catalog.ADJECTIVES)} {self.rng.choice(category.nouns)}"
        price = Decimal(str(round(category.median_price * self.rng.uniform(0.5, 2.0), 2)))
        row = self.conn.execute(
            self._q(
                "insert into {s}.products (seller_id, name, category, price, description)"
                " values (%s, %s, %s, %s, %s) returning product_id"
            ),
            (seller, name, category.name, price, f"{name}, new this season."),
        ).fetchone()
        assert row is not None
        self.products.append((row[0], seller))
        self.price[row[0]] = price
        return Counter(product_created=1)

    def request_returns(self) -> Counter[str]:
        n = min(len(self.returnable), self.rng.randint(1, 5))
        if n == 0:
            return self.advance_orders()
        picks = [self.returnable.popleft() for _ in range(n)]
        reasons = [self.rng.choice(catalog.RETURN_REASONS) for _ in picks]
        ids = self.conn.execute(
            self._q(
                "insert into {s}.returns (order_item_id, reason) select * from unnest(%s::bigint[], %s::text[])"
                " returning return_id"
            ),
            ([p[0] for p in picks], reasons),
        ).fetchall()
        self.open_returns["requested"].extend((r[0], p[1]) for r, p in zip(ids, picks))
        return Counter(return_requested=len(ids))

    def settle_returns(self) -> Counter[str]:
        """Approve requested returns, then refund or reject approved ones."""
        changed: Counter[str] = Counter()
        requested, approved = self.open_returns["requested"], self.open_returns["approved"]
        if len(requested) > 20:  # keep a few requested ones around to be withdrawn
            take = self.rng.randint(1, 20)
            batch = requested[:take]
            del requested[:take]
            cur = self.conn.execute(
                self._q("update {s}.returns set status = 'approved' where return_id = any(%s)"),
                ([r for r, _ in batch],),
            )
            approved.extend(batch)
            changed["return_approved"] += cur.rowcount
        take = min(len(approved), self.rng.randint(1, 20))
        batch = approved[:take]
        del approved[:take]
        refunds, amounts, rejects = [], [], []
        for return_id, value in batch:
            if self.rng.random() < 0.8:
                (bad,) = self._dirty("refund_above_price")
                refund = (value * Decimal("1.5") + 10 if bad else value).quantize(Decimal("0.01"))
                refunds.append(return_id)
                amounts.append(refund)
            else:
                rejects.append(return_id)
        if refunds:
            cur = self.conn.execute(
                self._q(
                    "update {s}.returns r set status = 'refunded', refund_amount = u.amount"
                    " from unnest(%s::bigint[], %s::numeric[]) as u(id, amount) where r.return_id = u.id"
                ),
                (refunds, amounts),
            )
            changed["return_refunded"] += cur.rowcount
        if rejects:
            cur = self.conn.execute(
                self._q("update {s}.returns set status = 'rejected' where return_id = any(%s)"),
                (rejects,),
            )
            changed["return_rejected"] += cur.rowcount
        return changed or self.request_returns()

    def delete_something(self) -> Counter[str]:
        """Occasional deletes: a withdrawn return, a purged cancelled order, a closed account."""
        roll = self.rng.random()
        requested = self.open_returns["requested"]
        if roll < 0.4 and requested:
            return_id, _ = requested.pop(self.rng.randrange(len(requested)))
            cur = self.conn.execute(
                self._q("delete from {s}.returns where return_id = %s"), (return_id,)
            )
            return Counter(return_deleted=cur.rowcount)
        if roll < 0.8 and self.cancelled:
            order_id = self.cancelled.pop()
            # returns and items go by ON DELETE CASCADE; counted so the totals match the WAL
            cascaded = self._rows(
                "select (select count(*) from {s}.returns r join {s}.order_items i using (order_item_id)"
                " where i.order_id = %(o)s), (select count(*) from {s}.order_items where order_id = %(o)s)",
                {"o": order_id},
            )[0]
            cur = self.conn.execute(
                self._q("delete from {s}.orders where order_id = %s"), (order_id,)
            )
            if not cur.rowcount:
                return Counter()
            return Counter(
                order_deleted=1, return_deleted=cascaded[0], order_item_deleted=cascaded[1]
            )
        if self.recent_signups:
            customer = self.recent_signups.pop()
            cur = self.conn.execute(
                self._q(
                    "delete from {s}.customers c where customer_id = %s and not exists"
                    " (select 1 from {s}.orders o where o.customer_id = c.customer_id)"
                ),
                (customer,),
            )
            if cur.rowcount:
                self.customers.remove(customer)
            return Counter(customer_deleted=cur.rowcount)
        return self.update_customers()
