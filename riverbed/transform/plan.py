"""What a table's quality rules read, worked out once per table from the config: the other
tables they refer to and how (by key, or all of their current rows), which columns of those
they mention, whether they read the table's own current rows or earlier batches. The run
(runner.py) uses it to choose what to read for each batch and whether batches may overlap."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from riverbed.config.tables import QualityRule, TableConfig
from riverbed.transform.engine import DIALECT

Lookups = tuple[tuple[str, str], ...]  # (column of the rows read, column of the checked batch)


@dataclass(frozen=True)
class RulePlan:
    """What ``table``'s rules read (see the functions below), computed once per table."""

    table: str
    # each other table the rules read, in name order, with how (None: all current rows)
    references: tuple[tuple[str, Lookups | None], ...]
    rule_columns: frozenset[str] | None  # every column the rules mention; None: a `*`
    reads_own_rows: bool
    own_lookups: Lookups | None  # how they read the table's own current rows
    reads_own_batches: bool  # checking a batch waits until the one before is committed

    @classmethod
    def of(cls, table: str, tables: dict[str, TableConfig]) -> RulePlan:
        cfg = tables[table]
        references = []
        for other in sorted(referenced_tables(table, cfg, tables)):
            lookups = _key_lookups(table, cfg, other, tables[other].keys)
            references.append((other, tuple(lookups) if lookups is not None else None))
        columns = _rule_columns(cfg)
        own = _own_lookups(table, cfg)
        return cls(
            table,
            tuple(references),
            frozenset(columns) if columns is not None else None,
            _reads_own_rows(table, cfg),
            tuple(own) if own is not None else None,
            _reads_own_batches(table, cfg),
        )


def read_current(tables: dict[str, TableConfig]) -> set[str]:
    """The tables whose current rows some table's rules read (its own, or another's)."""
    found: set[str] = set()
    for name in tables:
        plan = RulePlan.of(name, tables)
        found.update(other for other, _ in plan.references)
        if plan.reads_own_rows:
            found.add(name)
    return found


def table_order(tables: dict[str, TableConfig]) -> list[str]:
    """Config order, except that a table comes after every table its rules refer to."""
    needs = {name: referenced_tables(name, cfg, tables) for name, cfg in tables.items()}
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return  # a cycle is allowed: the table then checks against earlier runs only
        visiting.add(name)
        for other in sorted(needs[name]):
            visit(other)
        visiting.discard(name)
        ordered.append(name)

    for name in tables:
        visit(name)
    return ordered


def referenced_tables(name: str, cfg: TableConfig, tables: dict[str, Any]) -> set[str]:
    """Config tables a table's rules read (besides itself)."""
    found: set[str] = set()
    for rule in cfg.quality:
        if rule.reference:
            found.add(rule.reference.split(".")[0])
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is not None:  # else reported by the rule compiler, with the rule's name
                found.update(t.name for t in tree.find_all(exp.Table) if t.name in tables)
    found.discard(name)
    return found


def _rule_columns(cfg: TableConfig) -> set[str] | None:
    """Every column name a table's rules mention (any qualifier): what reading another table's
    current rows needs. None when a rule selects ``*``."""
    names: set[str] = set()
    for rule in cfg.quality:
        if rule.reference:
            names.add(rule.reference.split(".")[1])
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                continue
            if any(isinstance(s, exp.Star) for s in tree.find_all(exp.Star)):
                return None
            names.update(c.name for c in tree.find_all(exp.Column))
    return names


def _key_lookups(
    table: str, cfg: TableConfig, other: str, other_keys: list[str]
) -> list[tuple[str, str]] | None:
    """How ``table``'s rules read ``other``: [(other's key column, own column)] when every rule
    that reads it looks rows up by key equal to a column of the checked row (a references
    rule, or ``o.key = table.column`` in custom SQL); None when some rule reads it otherwise,
    or by a column a transform computes (the rows are chosen by the raw batch's values before
    any transform runs), so all of its current rows are needed."""
    if len(other_keys) != 1:
        return None
    key = other_keys[0]
    pairs: list[tuple[str, str]] = []
    for rule in cfg.quality:
        if rule.reference and rule.reference.split(".")[0] == other:
            if rule.reference.split(".")[1] != key or rule.column is None:
                return None
            pairs.append((key, rule.column))
        elif rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                return None
            tables = [t for t in tree.find_all(exp.Table) if t.name == other]
            if not tables:
                continue
            if rule.type == "sql_dataset":
                return None
            for ref in tables:
                alias = ref.alias_or_name
                found = None
                for eq in tree.find_all(exp.EQ):
                    sides = [eq.this, eq.expression]
                    if not all(isinstance(c, exp.Column) for c in sides):
                        continue
                    theirs = [c for c in sides if c.table == alias and c.name == key]
                    mine = [c for c in sides if c.table == table]
                    if theirs and mine:
                        found = (key, mine[0].name)
                if found is None:
                    return None
                pairs.append(found)
    if any(own in cfg.transforms for _, own in pairs):
        return None
    return pairs or None


def _rule_tree(rule: QualityRule) -> exp.Expr | None:
    """A custom rule's SQL as a query tree (a row-level predicate in a WHERE), or None when it
    does not parse: the rule compiler then says why, naming the rule. Read-only: shared."""
    return _parsed(rule.query_text)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> exp.Expr | None:
    # each batch asks several questions of the same rules: parse each text once per process
    try:
        return sqlglot.parse_one(text, read=DIALECT)
    except sqlglot.errors.ParseError:
        return None


def _own_lookups(table: str, cfg: TableConfig) -> list[tuple[str, str]] | None:
    """How ``table``'s rules read its own current rows: [(current rows' column, batch column)]
    when each looks rows up by a value the checked batch holds (unique: rows holding one of
    the batch's values; a reference to the table itself: rows the batch's values point to);
    None when a rule reads them otherwise (SQL naming the table), or by a column a transform
    computes (the rows are chosen by the raw batch's values, before any transform)."""
    pairs: list[tuple[str, str]] = []
    for rule in cfg.quality:
        if rule.type == "unique" and rule.column is not None:
            pairs.append((rule.column, rule.column))
        elif rule.reference and rule.column is not None:
            other, column = rule.reference.split(".")
            if other == table:
                pairs.append((column, rule.column))
        elif rule.sql:
            tree = _rule_tree(rule)
            if tree is None or any(t.name == table for t in tree.find_all(exp.Table)):
                return None
    if any(own in cfg.transforms for _, own in pairs):
        return None
    return pairs or None


def _reads_own_batches(table: str, cfg: TableConfig) -> bool:
    """Whether checking a batch reads what this table's earlier batches staged or recorded:
    its current rows (see _reads_own_rows), its recent row counts (row_count)."""
    return _reads_own_rows(table, cfg) or any(r.type == "row_count" for r in cfg.quality)


def _reads_own_rows(table: str, cfg: TableConfig) -> bool:
    """Whether a rule reads the table's current rows: unique (against the warehouse), a
    reference to the table itself, SQL naming it."""
    for rule in cfg.quality:
        if rule.type == "unique":
            return True
        if rule.reference and rule.reference.split(".")[0] == table:
            return True
        if rule.sql:
            tree = _rule_tree(rule)
            if tree is None:
                return True  # the rule compiler reports it; assume the worst meanwhile
            if any(t.name == table for t in tree.find_all(exp.Table)):
                return True
    return False
