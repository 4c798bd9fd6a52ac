"""The semantic layer's grains limited to some business days, for a refresh that recomputes
only those days: each current-state view the grain reads becomes the same ranking
(riverbed.load.fact_current.current_rows) over just the keys with a row on those days, so a
refresh ranks the versions of a few days' items instead of the whole history.

The keys taken are a superset of what the days need (every key with any version on those
days, the orders of those items, the returns of those items): a key whose current version
lies outside the days is ranked and then left out by the grain's own day condition, so the
cells come out exactly as the full views give them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from riverbed.lake.schema import OP
from riverbed.load.fact_current import current_rows
from riverbed.load.model import FactModel
from riverbed.serve.extracts.changes import ITEM_FACT, RETURN_FACT, STATUS_FACT
from riverbed.serve.extracts.datasets import Dataset


def keys_of_days(relation: str, days: Sequence[int]) -> dict[str, str]:
    """fact table -> a SELECT of the keys ``relation`` (items, returns) reads on ``days``."""
    listed = ", ".join(str(int(d)) for d in days)
    if relation == "returns":
        items = f"SELECT order_item_id FROM {RETURN_FACT} WHERE date_key IN ({listed})"
        return {
            RETURN_FACT: f"SELECT return_id FROM {RETURN_FACT} WHERE date_key IN ({listed})",
            ITEM_FACT: items,
            STATUS_FACT: f"SELECT order_id FROM {ITEM_FACT} WHERE order_item_id IN ({items})",
        }
    items = f"SELECT order_item_id FROM {ITEM_FACT} WHERE date_key IN ({listed})"
    return {
        ITEM_FACT: items,
        STATUS_FACT: f"SELECT order_id FROM {ITEM_FACT} WHERE date_key IN ({listed})",
        RETURN_FACT: f"SELECT return_id FROM {RETURN_FACT} WHERE order_item_id IN ({items})",
    }


def aggregate_days(
    dataset: Dataset,
    days: Sequence[int],
    facts: Sequence[FactModel],
    columns: dict[str, dict[str, str]],
) -> exp.Select:
    """``dataset``'s rows of ``days``, reading the facts' current rows of those days' keys
    only; ``columns``: the warehouse's tables and their columns (the views' are the facts'
    but ``_op``)."""
    select = dataset.aggregate(days)
    keys = keys_of_days(dataset.relation.name, days)
    views = {f.view: f for f in facts if f.name in keys}
    for table in list(select.find_all(exp.Table)):
        fact = views.get(table.name)
        if fact is None:
            continue
        names = [c for c in columns[fact.name] if c != OP]
        ranked = current_rows(fact, names, keys_from=keys[fact.name])
        table.replace(
            exp.Subquery(
                this=ranked, alias=exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
            )
        )
    return select
