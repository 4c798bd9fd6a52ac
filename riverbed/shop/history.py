"""Months of shop history, generated with numpy from one seed, as Arrow tables.

Determinism: every random draw comes from one ``numpy.random.Generator`` in a fixed order that
depends only on the spec, never on timing, so the same seed and end date give byte-identical
tables. The history is generated month by month (each month is one chunk of orders, items and
returns), which bounds memory for any size and lets the loader COPY one month while the next is
being generated.

All history lies before ``end`` (midnight UTC of the end date), so no seeded row has a time in
the future: only the live workload's dirty rows do.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa

from riverbed.shop import catalog

US = 1_000_000  # microseconds per second
DAY = 86_400 * US
TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class HistorySpec:
    customers: int = 5_000
    sellers: int = 300
    products: int = 2_000
    orders: int = 100_000
    months: int = 12
    seed: int = 42
    end: date | None = None  # history ends at midnight UTC of this day (default: today)

    @property
    def end_at(self) -> datetime:
        day = self.end or datetime.now(UTC).date()
        return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class _Dims:
    """What the fact generators need to know about the dimensions."""

    customer_created: np.ndarray
    customer_activity: np.ndarray
    customer_basket: np.ndarray
    seller_tier: np.ndarray
    product_seller: np.ndarray
    product_cents: np.ndarray
    product_created: np.ndarray
    product_popularity: np.ndarray
    product_growth: np.ndarray
    product_return_factor: np.ndarray


@dataclass(frozen=True)
class _Placed:
    """A month's orders, as the items and returns generated after them need them."""

    customer: np.ndarray  # index into the customers
    ordered: np.ndarray  # microseconds
    order_ids: np.ndarray
    status: np.ndarray  # index into the order status names
    updated: np.ndarray  # microseconds: the last status change


@dataclass(frozen=True)
class _Sold:
    """A month's order items, as the returns generated after them need them."""

    item_order: np.ndarray  # index into the month's orders
    item_ids: np.ndarray
    product: np.ndarray  # index into the products
    seller: np.ndarray  # index into the sellers
    quantity: np.ndarray
    unit_cents: np.ndarray


def month_bounds(end: datetime, months: int) -> list[datetime]:
    """``months + 1`` boundaries stepping back whole calendar months from ``end``."""
    bounds = []
    for back in range(months, -1, -1):
        year, month = end.year, end.month - back
        while month < 1:
            year, month = year - 1, month + 12
        day = min(end.day, calendar.monthrange(year, month)[1])
        bounds.append(end.replace(year=year, month=month, day=day))
    return bounds


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * US


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), type=TS)


def _money(cents: np.ndarray) -> pa.Array:
    # float64 of a whole number of cents / 100 prints as the shortest exact decimal ("12.49"),
    # which PostgreSQL parses into numeric(12,2) without rounding
    return pa.array(cents.astype(np.float64) / 100.0, type=pa.float64())


def _normalised(weights: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Probabilities from weights; with none eligible yet (tiny shops), from ``fallback``."""
    total = weights.sum()
    return weights / total if total > 0 else fallback / fallback.sum()


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> np.ndarray:
    return np.asarray(options, dtype=object)[rng.integers(0, len(options), n)]


class HistoryGenerator:
    """Yields ``(table, arrow_table)`` chunks: dimensions first, then each month's facts."""

    def __init__(self, spec: HistorySpec):
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.end = _us(spec.end_at)
        self.bounds = [_us(b) for b in month_bounds(spec.end_at, spec.months)]
        self.next_item_id = 1
        self.next_return_id = 1
        self.next_order_id = 1

    def chunks(self) -> Iterator[tuple[str, pa.Table]]:
        customers, dims_c = self._customers()
        yield "customers", customers
        sellers, tiers = self._sellers()
        yield "sellers", sellers
        products, dims_p = self._products(tiers)
        yield "products", products
        dims = _Dims(**dims_c, seller_tier=tiers, **dims_p)
        per_month = self._orders_per_month()
        for k, n_orders in enumerate(per_month):
            yield from self._month(k, int(n_orders), dims)

    # --- dimensions -----------------------------------------------------------------------

    def _places(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = list(catalog.COUNTRIES)
        weights = np.array([catalog.COUNTRY_WEIGHT[c] for c in codes], dtype=float)
        idx = self.rng.choice(len(codes), n, p=weights / weights.sum())
        city_pick = self.rng.integers(0, 1 << 30, n)
        country = np.asarray(codes, dtype=object)[idx]
        region = np.asarray([catalog.COUNTRIES[c][0] for c in codes], dtype=object)[idx]
        city = np.array(
            [
                catalog.COUNTRIES[codes[i]][1][p % len(catalog.COUNTRIES[codes[i]][1])]
                for i, p in zip(idx, city_pick)
            ],
            dtype=object,
        )
        return country, region, city

    def _customers(self) -> tuple[pa.Table, dict[str, np.ndarray]]:
        n, rng, start = self.spec.customers, self.rng, self.bounds[0]
        country, region, city = self._places(n)
        first = _pick(rng, catalog.FIRST_NAMES, n)
        last = _pick(rng, catalog.LAST_NAMES, n)
        # a little over half existed before the window; the rest sign up during it
        before = rng.random(n) < 0.55
        created = np.where(
            before,
            start - rng.integers(1, 730, n) * DAY - rng.integers(0, DAY, n),
            rng.integers(start, self.end, n),
        )
        order = np.argsort(created, kind="stable")
        created = created[order]
        country, region, city = country[order], region[order], city[order]
        ids = np.arange(1, n + 1)
        changed = rng.random(n) < 0.3
        updated = np.where(
            changed, created + ((self.end - created) * rng.random(n)).astype(np.int64), created
        )
        segment_shares = np.array([s.share for s in catalog.CUSTOMER_SEGMENTS])
        segment = rng.choice(len(catalog.CUSTOMER_SEGMENTS), n, p=segment_shares)
        frequency = np.array([s.frequency for s in catalog.CUSTOMER_SEGMENTS])[segment]
        basket = np.array([s.basket for s in catalog.CUSTOMER_SEGMENTS])[segment]
        region_basket = np.array([catalog.REGION_BASKET[r] for r in region])
        activity = frequency * rng.lognormal(0.0, 0.5, n)
        phone_digits = rng.integers(1_000_000, 9_999_999, n)
        emails = [f"{f.lower()}.{s.lower()}{i}@example.com" for f, s, i in zip(first, last, ids)]
        table = pa.table(
            {
                "customer_id": pa.array(ids, pa.int64()),
                "email": pa.array(emails, pa.string()),
                "full_name": pa.array([f"{f} {s}" for f, s in zip(first, last)], pa.string()),
                "phone": pa.array([f"+1-555-{d}" for d in phone_digits], pa.string()),
                "city": pa.array(city, pa.string()),
                "country": pa.array(country, pa.string()),
                "region": pa.array(region, pa.string()),
                "created_at": _ts(created),
                "updated_at": _ts(updated),
            }
        )
        dims = {
            "customer_created": created,
            "customer_activity": activity,
            "customer_basket": basket * region_basket,
        }
        return table, dims

    def _sellers(self) -> tuple[pa.Table, np.ndarray]:
        n, rng, start = self.spec.sellers, self.rng, self.bounds[0]
        country, region, city = self._places(n)
        word = _pick(rng, catalog.SELLER_WORDS, n)
        word2 = _pick(rng, catalog.SELLER_WORDS, n)
        suffix = _pick(rng, catalog.SELLER_SUFFIXES, n)
        shares = np.array([t.share for t in catalog.SELLER_TIERS])
        tier = rng.choice(len(catalog.SELLER_TIERS), n, p=shares)
        created = start - rng.integers(30, 1500, n) * DAY
        created.sort()
        table = pa.table(
            {
                "seller_id": pa.array(np.arange(1, n + 1), pa.int64()),
                "name": pa.array(
                    [f"{a} {b} {c}" for a, b, c in zip(word, word2, suffix)], pa.string()
                ),
                "city": pa.array(city, pa.string()),
                "country": pa.array(country, pa.string()),
                "region": pa.array(region, pa.string()),
                "created_at": _ts(created),
                "updated_at": _ts(created),
            }
        )
        return table, tier

    def _products(self, seller_tier: np.ndarray) -> tuple[pa.Table, dict[str, np.ndarray]]:
        n, rng, start = self.spec.products, self.rng, self.bounds[0]
        cats = catalog.CATEGORIES
        category = rng.integers(0, len(cats), n)
        seller_weight = rng.lognormal(0.0, 0.8, len(seller_tier))
        seller = rng.choice(len(seller_tier), n, p=seller_weight / seller_weight.sum())
        median = np.array([c.median_price for c in cats])[category]
        cents = np.maximum(100, np.round(median * rng.lognormal(0.0, 0.45, n) * 100)).astype(
            np.int64
        )
        adjective = _pick(rng, catalog.ADJECTIVES, n)
        noun_pick = rng.integers(0, 1 << 30, n)
        names = [
            f"{a} {cats[c].nouns[p % len(cats[c].nouns)]}"
            for a, c, p in zip(adjective, category, noun_pick)
        ]
        # 70% were on sale before the window; the rest launch during it
        launched_before = rng.random(n) < 0.7
        created = np.where(
            launched_before,
            start - rng.integers(1, 900, n) * DAY,
            rng.integers(start, self.end, n),
        )
        active = rng.random(n) < 0.96
        description_words = rng.integers(12, 80, n)
        descriptions = [
            f"{name}. "
            + " ".join(
                catalog.ADJECTIVES[(i * 7 + j) % len(catalog.ADJECTIVES)].lower() for j in range(w)
            )
            for i, (name, w) in enumerate(zip(names, description_words))
        ]
        growth = np.array([c.monthly_growth for c in cats])[category] + rng.normal(0.0, 0.02, n)
        popularity = rng.lognormal(0.0, 1.0, n)
        return_factor = np.array(
            [
                {"fashion": 1.6, "electronics": 1.2, "books": 0.5, "dvds": 0.5}.get(c.name, 1.0)
                for c in cats
            ]
        )[category]
        table = pa.table(
            {
                "product_id": pa.array(np.arange(1, n + 1), pa.int64()),
                "seller_id": pa.array(seller + 1, pa.int64()),
                "name": pa.array(names, pa.string()),
                "category": pa.array([cats[c].name for c in category], pa.string()),
                "price": _money(cents),
                "description": pa.array(descriptions, pa.string()),
                "is_active": pa.array(active, pa.bool_()),
                "created_at": _ts(created),
                "updated_at": _ts(created),
            }
        )
        dims = {
            "product_seller": seller,
            "product_cents": cents,
            "product_created": created,
            "product_popularity": popularity,
            "product_growth": growth,
            "product_return_factor": return_factor,
        }
        return table, dims

    # --- facts, month by month ------------------------------------------------------------

    def _orders_per_month(self) -> np.ndarray:
        months = self.spec.months
        lengths = np.diff(np.array(self.bounds, dtype=np.float64))
        trend = 1.025 ** np.arange(months)
        middles = [(a + b) // 2 for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        season = np.array(
            [  # the holiday peak
                1.45 if datetime.fromtimestamp(m / US, UTC).month in (11, 12) else 1.0
                for m in middles
            ]
        )
        weights = lengths * trend * season
        return self.rng.multinomial(self.spec.orders, weights / weights.sum())

    def _month(self, k: int, n: int, d: _Dims) -> Iterator[tuple[str, pa.Table]]:
        """Month ``k``'s ``n`` orders, their items and the items' returns, in that order (each
        step draws from the generator after the one before, see the module's docstring)."""
        orders, placed = self._orders(k, n, d)
        yield "orders", orders
        items, sold = self._items(k, placed, d)
        yield "order_items", items
        yield "returns", self._returns(placed, sold, d)

    def _orders(self, k: int, n: int, d: _Dims) -> tuple[pa.Table, _Placed]:
        """Month ``k``'s ``n`` orders: who buys is weighted by activity among customers who
        exist by the month's end."""
        rng = self.rng
        lo, hi = self.bounds[k], self.bounds[k + 1]
        weights = _normalised(
            np.where(d.customer_created < hi, d.customer_activity, 0.0), d.customer_activity
        )
        customer = rng.choice(len(weights), n, p=weights)
        ordered = rng.integers(lo, hi, n)
        ordered = np.maximum(ordered, d.customer_created[customer] + 3600 * US)
        ordered = np.minimum(ordered, self.end - US)
        order = np.argsort(ordered, kind="stable")
        ordered, customer = ordered[order], customer[order]
        order_ids = np.arange(self.next_order_id, self.next_order_id + n)
        self.next_order_id += n

        age = self.end - ordered
        u = rng.random(n)
        status = np.where(
            age > 14 * DAY,
            np.where(u < 0.07, 4, 3),
            np.where(
                age > 4 * DAY,
                np.where(u < 0.05, 4, np.where(u < 0.5, 2, 3)),
                np.where(u < 0.3, 0, np.where(u < 0.7, 1, 2)),
            ),
        )
        # the time of the last status change: paid after minutes, shipped/delivered after days
        step = np.array([0, 600 * US, 2 * DAY, 5 * DAY, DAY // 2], dtype=np.int64)[status]
        jitter = rng.integers(0, 6 * 3600 * US, n) * (status > 1)
        updated = np.minimum(ordered + step + jitter, self.end - US)
        status_names = np.asarray(
            ("placed", "paid", "shipped", "delivered", "cancelled"), dtype=object
        )
        table = pa.table(
            {
                "order_id": pa.array(order_ids, pa.int64()),
                "customer_id": pa.array(customer + 1, pa.int64()),
                "status": pa.array(status_names[status], pa.string()),
                "ordered_at": _ts(ordered),
                "updated_at": _ts(updated),
            }
        )
        return table, _Placed(customer, ordered, order_ids, status, updated)

    def _items(self, k: int, placed: _Placed, d: _Dims) -> tuple[pa.Table, _Sold]:
        """The orders' items: basket size follows the customer; products follow this month's
        popularity."""
        rng = self.rng
        lo = self.bounds[k]
        months_before_end = self.spec.months - 1 - k
        customer, ordered, order_ids = placed.customer, placed.ordered, placed.order_ids
        per_order = np.minimum(1 + rng.poisson(0.9 * d.customer_basket[customer]), 12)
        m = int(per_order.sum())
        item_order = np.repeat(np.arange(len(customer)), per_order)
        available = d.product_created < lo
        popularity = d.product_popularity * np.exp(np.log1p(d.product_growth) * k)
        product = rng.choice(
            len(popularity), m, p=_normalised(np.where(available, popularity, 0.0), popularity)
        )
        quantity = 1 + rng.poisson(0.25, m)
        # prices drift up ~0.4% a month, so older sales were a little cheaper
        unit_cents = np.round(d.product_cents[product] * (1 - 0.004 * months_before_end)).astype(
            np.int64
        )
        item_ids = np.arange(self.next_item_id, self.next_item_id + m)
        self.next_item_id += m
        seller = d.product_seller[product]
        table = pa.table(
            {
                "order_item_id": pa.array(item_ids, pa.int64()),
                "order_id": pa.array(order_ids[item_order], pa.int64()),
                "product_id": pa.array(product + 1, pa.int64()),
                "seller_id": pa.array(seller + 1, pa.int64()),
                "quantity": pa.array(quantity, pa.int32()),
                "unit_price": _money(unit_cents),
                "created_at": _ts(ordered[item_order]),
            }
        )
        return table, _Sold(item_order, item_ids, product, seller, quantity, unit_cents)

    def _returns(self, placed: _Placed, sold: _Sold, d: _Dims) -> pa.Table:
        """The items returned: delivered items come back at the rate of their seller's tier."""
        rng = self.rng
        item_order, product, seller = sold.item_order, sold.product, sold.seller
        quantity, unit_cents, item_ids = sold.quantity, sold.unit_cents, sold.item_ids
        status, updated = placed.status, placed.updated
        m = len(item_order)
        tier_rate = np.array([t.return_rate for t in catalog.SELLER_TIERS])[d.seller_tier[seller]]
        chance = tier_rate * d.product_return_factor[product]
        delivered = status[item_order] == 3
        returned = delivered & (rng.random(m) < chance)
        requested = updated[item_order] + rng.integers(DAY, 20 * DAY, m)
        returned &= requested < self.end
        idx = np.nonzero(returned)[0]
        r = len(idx)
        requested = requested[idx]
        r_age = self.end - requested
        refund_share = np.array([t.refund_share for t in catalog.SELLER_TIERS])[
            d.seller_tier[seller[idx]]
        ]
        v = rng.random(r)
        r_status = np.where(
            r_age > 10 * DAY,
            np.where(v < refund_share, 2, 3),
            np.where(r_age > 3 * DAY, np.where(v < 0.6, 1, 0), 0),
        )
        full = quantity[idx] * unit_cents[idx]
        partial = rng.random(r) < 0.2
        refund = np.where(partial, full // 2, full)
        has_refund = (r_status == 1) | (r_status == 2)
        r_updated = requested + (r_age * rng.random(r) * (r_status > 0)).astype(np.int64)
        reasons = _pick(rng, catalog.RETURN_REASONS, r)
        return_ids = np.arange(self.next_return_id, self.next_return_id + r)
        self.next_return_id += r
        status_names_r = np.asarray(("requested", "approved", "refunded", "rejected"), dtype=object)
        return pa.table(
            {
                "return_id": pa.array(return_ids, pa.int64()),
                "order_item_id": pa.array(item_ids[idx], pa.int64()),
                "reason": pa.array(reasons, pa.string()),
                "status": pa.array(status_names_r[r_status], pa.string()),
                "refund_amount": pa.array(
                    np.where(has_refund, refund, 0).astype(np.float64) / 100.0,
                    mask=~has_refund,
                    type=pa.float64(),
                ),
                "requested_at": _ts(requested),
                "updated_at": _ts(np.minimum(r_updated, self.end - US)),
            }
        )
