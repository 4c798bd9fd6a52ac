"""The rollups: datasets whose cells are made from another dataset's (``rollup_of``) inside
the extract, with no pass over the warehouse. A base is always made before the rollups made
of it (``_in_order``), so a rollup of a rollup (``extract_customer_totals``, over the months
of ``extract_customer_orders_monthly``) reads its base as it is now.

On a full build each is made whole from its base's cells (``build``). On a refresh the base
datasets' change is in ``delta_<dataset>`` (delta.py, or the touched days' cells new minus
old, refresh.py) and the rollups follow it (``refresh``) one of two ways:

* sums (``extract_*_monthly``, ``extract_customer_totals``): its base's delta summed per
  coarser cell (delta.roll_up) and merged (delta.merge), as a base's. That holds for the
  distinct orders of ``extract_*_orders_monthly`` too: their base's delta is its cells'
  distinct orders new minus old (delta.py, or its touched days' cells new minus old), and
  a month's orders are stored as the sum of its days' (a rollup of distinct orders drops
  order-level columns only, datasets.Dataset; while an order spans two days that sum is
  kept all the same and not read, delta.py);
* derived (``derivation``: ``extract_cohorts``, whose first month per customer depends on all
  of that customer's months): its cells are sums over the values of ``per`` (a customer),
  each value's contribution depending only on its own rows of the base. So the values in the
  base's delta have their contribution taken away as the base was before the delta merged
  and added as it is after, and that difference is merged as a delta (it carries ``_rows``,
  its cells' count, so a cell whose last customer left is deleted).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from riverbed.serve.extracts import delta, partial
from riverbed.serve.extracts.datasets import DATASETS, Dataset


def build(extract: duckdb.DuckDBPyConnection) -> None:
    """Every rollup made whole from its base's cells (the bases are written)."""
    for rollup in _in_order(d for d in DATASETS if d.rollup_of is not None):
        assert rollup.rollup_of is not None
        cells = (
            rollup.derive()
            if rollup.derivation is not None
            else partial.local_cells(rollup, rollup.rollup_of.name)
        )
        extract.execute(f"CREATE OR REPLACE TABLE {rollup.name} AS {cells} ORDER BY {rollup.order}")


def refresh(extract: duckdb.DuckDBPyConnection, base: Dataset) -> None:
    """Bring the rollups made of ``base`` (a base dataset) up to date with its
    ``delta_<base>`` (made and merged; inside the transaction that merged it)."""
    for rollup in _in_order(d for d in DATASETS if d.rollup_of is not None and root(d) is base):
        if rollup.derivation is not None:
            assert rollup.rollup_of is not None and rollup.rollup_of.rollup_of is not None, (
                f"{rollup.name}: a derived rollup follows a rollup's merge"
            )
            continue  # follows its base's merge, below
        delta.roll_up(extract, rollup)
        derived = [d for d in DATASETS if d.rollup_of is rollup and d.derivation is not None]
        for dataset in derived:
            _contributions(extract, dataset, before=True)
        delta.merge(extract, rollup)
        for dataset in derived:
            _contributions(extract, dataset, before=False)
            delta.merge(extract, dataset)


def root(dataset: Dataset) -> Dataset:
    """The base dataset ``dataset`` is made of (itself when it is one)."""
    return dataset if dataset.rollup_of is None else root(dataset.rollup_of)


def family(base: Dataset) -> int:
    """How many datasets ``base`` and the rollups made of it are."""
    return sum(1 for d in DATASETS if root(d) is base)


def _in_order(datasets: Iterable[Dataset]) -> list[Dataset]:
    def depth(dataset: Dataset) -> int:
        return 0 if dataset.rollup_of is None else 1 + depth(dataset.rollup_of)

    return sorted(datasets, key=depth)


def _contributions(extract: duckdb.DuckDBPyConnection, rollup: Dataset, before: bool) -> None:
    """``delta_<rollup>``: the cells of the ``per`` values in its base's delta taken away
    (``before``: the base not merged yet), then added (the base merged) and summed per cell."""
    assert rollup.rollup_of is not None and rollup.per is not None
    base, per = rollup.rollup_of.name, rollup.per
    rows = f"(SELECT * FROM {base} WHERE {per} IN (SELECT {per} FROM delta_{base})) AS b"
    cells = rollup.derive(rows)
    if before:
        extract.execute(
            f"CREATE OR REPLACE TEMP TABLE before_{rollup.name} AS"
            f" {delta.negated(rollup, f'({cells}) AS c')}"
        )
        return
    summed = partial.local_cells(
        rollup, f"(SELECT * FROM before_{rollup.name} UNION ALL BY NAME {cells}) AS c"
    )
    extract.execute(
        f"CREATE OR REPLACE TEMP TABLE delta_{rollup.name} AS SELECT * FROM ({summed}) AS d"
        f" WHERE NOT ({delta.no_change(rollup)})"
    )
    extract.execute(f"DROP TABLE before_{rollup.name}")
