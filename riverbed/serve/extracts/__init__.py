"""Extracts (QuickSight's SPICE): pre-aggregates of the semantic layer that pages read instead
of the warehouse, so a page never waits on a load and a load never waits on a page.

=============== ================================================================================
datasets.py     what is extracted: per-day cells of the measures by the charts' dimensions
store.py        the generation files and the ``current`` pointer, swapped atomically; pruning
changes.py      what a refresh must bring up to date: the keys and days the loads since and the
                changed dimensions reach
delta.py        cells maintained by deltas: the changed keys' grain rows now minus before (the
                datasets of additive measures; those holding distinct orders: their days)
partial.py      the grains' rows limited to some keys or days, summed per dataset
refresh.py      the publish state's refresh: a copy of the previous generation, deltas merged in
derive.py       the rollups made from their bases' cells in the extract, kept by their deltas
split_orders.py the live orders whose items span two days: the guard on summing distinct orders
rollup.py       Rill's rules: may a dataset answer a query, and the query rewritten onto it
split.py        a day range cutting months: whole months from a monthly dataset, edge days daily
cohorts.py      the cohort charts' query onto the customers counted per first and active month
policy.py       the warehouse policy mapped onto the datasets (row filters, grants, masks)
answer.py       a chart's query from the extract through the gateway, audited; None: go live
=============== ================================================================================

``riverbed.serve.semantic.chart_data`` asks ``answer`` first and runs the query live when it
answers None, so every chart gives the same numbers either way. ``as_of`` is the freshness a
page shows; the metrics ``extract_loaded_at`` and ``extract_refreshed_at`` the same for alarms.
"""

from __future__ import annotations

from riverbed.config import Project
from riverbed.serve.extracts.store import Generation, current


def as_of(project: Project) -> Generation | None:
    """The current extract: the run that made it (``run_id``), when the warehouse data it
    reflects was loaded (``loaded_at``) and when it was published (``refreshed_at``), as
    Unix times; None when there is no extract (every chart is then answered live)."""
    return current(project)


__all__ = ["Generation", "as_of"]
