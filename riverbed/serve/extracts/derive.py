"""The rollups' cells derived again from their bases' in the extract (no pass over the
warehouse), after a refresh wrote the base datasets: all of them on a full build, those of the
touched months on an incremental one. A base is derived before the rollups made of it.

Three ways, by what a rollup's cells are:

* sums per month (``extract_*_monthly``): the touched months' cells deleted and summed again;
* sums over every month (no month column: ``extract_customer_totals``): the keys with a
  cell in the touched months, before the base changes or after, summed again from the base
  (a difference of sums would turn a SUM over no value, NULL, into 0);
* anything else (``derivation``: ``extract_cohorts``, whose first months depend on every
  month of a customer) derived whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb

from riverbed.serve.extracts.datasets import DATASETS, Dataset


def rollups(extract: duckdb.DuckDBPyConnection, months: Sequence[int] | None) -> None:
    """Derive every rollup again: all cells (``months`` None) or those of ``months`` (YYYYMM)."""
    if months is not None and not months:
        return
    for rollup in _in_order(d for d in DATASETS if d.rollup_of is not None):
        if months is None or rollup.derivation is not None:
            _whole(extract, rollup)
            continue
        if _over_months(rollup):
            continue  # follows its base's change below
        totals = [d for d in DATASETS if d.rollup_of is rollup and _over_months(d)]
        for total in totals:
            _touched(extract, total, months)
        _months(extract, rollup, months)
        for total in totals:
            _touched(extract, total, months)
            _keys(extract, total)


def _in_order(datasets: Iterable[Dataset]) -> list[Dataset]:
    def depth(dataset: Dataset) -> int:
        return 0 if dataset.rollup_of is None else 1 + depth(dataset.rollup_of)

    return sorted(datasets, key=depth)


def _over_months(rollup: Dataset) -> bool:
    assert rollup.rollup_of is not None
    return (
        rollup.derivation is None
        and "month" not in rollup.column_names
        and ("month" in rollup.rollup_of.column_names)
    )


def _whole(extract: duckdb.DuckDBPyConnection, rollup: Dataset) -> None:
    extract.execute(
        f"CREATE OR REPLACE TABLE {rollup.name} AS {rollup.derive()} ORDER BY {rollup.order}"
    )


def _months(extract: duckdb.DuckDBPyConnection, rollup: Dataset, months: Sequence[int]) -> None:
    extract.execute("BEGIN")
    extract.execute(
        f"DELETE FROM {rollup.name} WHERE year * 100 + month IN (SELECT UNNEST(?::INTEGER[]))",
        [list(months)],
    )
    extract.execute(f"INSERT INTO {rollup.name} BY NAME {rollup.derive(months)}")
    extract.execute("COMMIT")


_TOUCHED = "touched_keys"


def _touched(extract: duckdb.DuckDBPyConnection, total: Dataset, months: Sequence[int]) -> None:
    """Note the keys of ``total`` with a cell of ``months`` in its base (as it is now)."""
    assert total.rollup_of is not None
    names = ", ".join(total.column_names)
    where = ", ".join(str(int(m)) for m in months)
    extract.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_TOUCHED} AS SELECT {names} FROM {total.name} LIMIT 0"
    )
    extract.execute(
        f"INSERT INTO {_TOUCHED} SELECT DISTINCT {names} FROM {total.rollup_of.name}"
        f" WHERE year * 100 + month IN ({where})"
    )


def _keys(extract: duckdb.DuckDBPyConnection, total: Dataset) -> None:
    """Sum ``total``'s touched keys again from its base."""
    assert total.rollup_of is not None
    same = " AND ".join(f"c.{n} IS NOT DISTINCT FROM k.{n}" for n in total.column_names)
    keys = f"(SELECT DISTINCT * FROM {_TOUCHED}) AS k"
    sums = ", ".join(f"SUM(c.{m}) AS {m}" for m in total.measures)
    names = ", ".join(f"c.{n}" for n in total.column_names)
    extract.execute("BEGIN")
    extract.execute(f"DELETE FROM {total.name} AS c USING {keys} WHERE {same}")
    extract.execute(
        f"INSERT INTO {total.name} BY NAME SELECT {names}, {sums}"
        f" FROM {total.rollup_of.name} AS c SEMI JOIN {keys} ON {same} GROUP BY ALL"
    )
    extract.execute("COMMIT")
    extract.execute(f"DROP TABLE {_TOUCHED}")
