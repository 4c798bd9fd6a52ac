"""Erasure in the warehouse (`riverbed forget`, riverbed.govern.erasure step 3): the load
stage owns the warehouse's tables, so it nulls an erased key's personal columns there.

Every table the key's personal values reach: the dimension (every SCD2 version keeps its
row, its dates and its other columns: history stays, the values go), the staging tables, and
any fact that carries personal columns and the key's columns. One UPDATE per table, touching
only the rows still holding a value, in one transaction; then ``Warehouse.compact``, since
an UPDATE leaves the old values in the file's freed blocks (DuckDB) or dead tuples
(PostgreSQL) until they happen to be reused.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from riverbed.config.models import RiverbedConfig
from riverbed.config.personal import scrubs
from riverbed.load.model import staging_table
from riverbed.load.versions import bump, ensure_versions
from riverbed.load.warehouse import Warehouse


def erase_rows(
    warehouse: Warehouse, config: RiverbedConfig, table: str, keys: Sequence[str]
) -> dict[str, int]:
    """Null the personal columns of ``keys`` of config table ``table`` in every warehouse
    table holding them, and compact the tables changed: rows changed per table."""
    statements: dict[str, exp.Update] = {}
    for found in scrubs(config, table):
        for name in (found.target, staging_table(found.table)):
            columns = warehouse.columns(name)
            if columns is None or not all(m in columns for m in found.match):
                continue
            personal = [c for c in found.columns if c in columns]
            if personal:
                statements[name] = _update(name, personal, found.match, keys)
    changed: dict[str, int] = {}
    ensure_versions(warehouse)
    with warehouse.transaction():
        for name, statement in statements.items():
            changed[name] = warehouse.execute(statement)
            # every table, changed or not: a copy of it built before a killed erasure's
            # UPDATE committed may hold the values still, and must go stale
            bump(warehouse, name)
    # compacted every time, changed or not: a rerun after a kill between the UPDATE's commit
    # and the compaction finds nothing to change, and the old values still in the file
    warehouse.compact(list(statements))
    return changed


def _update(
    table: str, columns: Sequence[str], match: Sequence[str], keys: Sequence[str]
) -> exp.Update:
    """UPDATE table SET each column NULL WHERE the key's text is one of ``keys`` and some
    column still holds a value."""
    texts: list[exp.Expr] = [exp.cast(exp.column(m), exp.DataType.Type.TEXT) for m in match]
    key: exp.Expr = texts[0]
    for text in texts[1:]:
        key = exp.DPipe(
            this=exp.DPipe(this=key, expression=exp.Literal.string(",")), expression=text
        )
    holding = exp.or_(*[exp.column(c).is_(exp.null()).not_() for c in columns])
    where = exp.and_(key.isin(*[exp.Literal.string(k) for k in keys]), exp.paren(holding))
    return exp.update(table, {c: exp.null() for c in columns}, where=where)
