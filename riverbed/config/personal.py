"""What is personal data, for erasure (`riverbed forget TABLE KEY`): decided from the config
alone, so the transform (which scrubs an erased key's later changes), the lake and the
warehouse all erase the same columns.

A table's personal columns are its ``pii:`` columns (tables.<t>.pii) and the columns of its
warehouse target tagged ``pii`` in governance.tags (``dim_customer.email: [pii]``), keys
excepted: the key names the data subject, and the tombstone keeps it to recognise their later
changes.

A data subject of table T keeps personal data in T's own rows (found by T's keys) and in the
rows of any other table that has personal columns of its own and carries T's key columns by
the same names (a fact with ``customer_id`` and a tagged ``shipping_email``): ``scrubs``
lists both. Which of those tables actually carry the key columns only their rows can tell (a
file's schema, a warehouse table's columns): the callers check before scrubbing.
"""

from __future__ import annotations

from dataclasses import dataclass

from riverbed.config.models import RiverbedConfig

PERSONAL_TAG = "pii"  # the governance tag that marks a warehouse column as personal data


@dataclass(frozen=True)
class Scrub:
    """Null ``columns`` of ``table`` (warehouse table ``target``) on the rows whose ``match``
    columns hold an erased key."""

    table: str
    target: str
    columns: tuple[str, ...]
    match: tuple[str, ...]


def personal_columns(config: RiverbedConfig, table: str) -> list[str]:
    """The personal columns of config table ``table``, in the order the config names them."""
    cfg = config.tables[table]
    columns = dict.fromkeys(cfg.pii)
    prefix = f"{cfg.target}.".lower()
    for key, tags in config.governance.tags.items():
        if PERSONAL_TAG in tags and key.lower().startswith(prefix):
            columns[key.split(".", 1)[1]] = None
    return [c for c in columns if c not in cfg.keys]


def scrubs(config: RiverbedConfig, table: str) -> list[Scrub]:
    """Where the data subjects of ``table`` keep personal data: its own rows first, then the
    rows of each other table with personal columns (see the module's docstring)."""
    keys = tuple(config.tables[table].keys)
    found: list[Scrub] = []
    for name, cfg in config.tables.items():
        columns = tuple(c for c in personal_columns(config, name) if c not in keys)
        if columns:
            found.append(Scrub(name, cfg.target, columns, keys))
    found.sort(key=lambda s: s.table != table)
    return found


def scrubs_of(config: RiverbedConfig, table: str) -> list[tuple[str, Scrub]]:
    """The scrubs that reach the rows of ``table``, each with the table whose erasures it
    carries out: what the transform applies to a batch of ``table``."""
    return [
        (erased, scrub)
        for erased in config.tables
        for scrub in scrubs(config, erased)
        if scrub.table == table
    ]


def no_personal_columns(config: RiverbedConfig, table: str) -> str:
    """The one line that refuses to erase from a table with no personal columns."""
    target = config.tables[table].target
    return (
        f"{table} has no personal columns to erase; tag them in riverbed.yaml, e.g. "
        f"governance.tags: {{{target}.email: [{PERSONAL_TAG}]}}, or list them under "
        f"tables.{table}.pii"
    )
