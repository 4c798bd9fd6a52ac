"""What a table's quality rules compile against (``RuleContext``: the table, its keys, the
batch's columns and types, the relations of current rows, the recent batch sizes, the moment
``now``), and the error a rule that cannot run raises (``RuleError``).

Every rule family (``rows``, ``custom``, ``dataset``) compiles a rule against a ``RuleTarget``,
the batch relation and its context, which also builds the RuleErrors that name the table, the
rule and what went wrong; a row rule compiles to a ``RowCheck``."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
from sqlglot import exp

from riverbed.config.tables import QualityRule
from riverbed.errors import RiverbedError


class RuleError(RiverbedError):
    """A quality rule cannot run against this table (unknown column or table, invalid SQL).

    Terminal: the rule or the table's columns must change; a retry gives the same answer.
    """


@dataclass(frozen=True)
class RuleContext:
    """What a table's rules are compiled against."""

    table: str  # config table name, e.g. "orders"
    keys: list[str]  # the table's key columns
    columns: list[str]  # the batch's columns (source + derived + CDC)
    now: datetime  # tz-aware; a literal in the SQL so retries and engines agree
    current: str | None  # relation: current rows of this table (one per live key), if any
    references: Mapping[str, str]  # config table name -> relation of its current rows
    recent_counts: Sequence[int]  # row counts of this table's previous batches, newest last
    types: Mapping[str, pa.DataType] = field(default_factory=dict)  # the batch's column types
    # every config table (``references`` holds only those the rules read): named in messages
    tables: Sequence[str] = ()


@dataclass(frozen=True)
class RowCheck:
    """A row rule compiled: the condition a row fails, its reason, and the lookups it joins."""

    fails: exp.Expr  # TRUE when a (live) row fails; NULL counts as pass
    reason: exp.Expr  # the text shown when it fails
    joins: list[tuple[exp.Expr, exp.Expr]]  # (aliased subquery, ON condition)


@dataclass(frozen=True)
class RuleTarget:
    """One table's rules being compiled: the batch relation they read, their context, and the
    errors they raise, which name the table and the rule."""

    batch: str
    ctx: RuleContext

    def fail(self, rule: QualityRule, problem: str) -> RuleError:
        return RuleError(f"{self.ctx.table}: rule {rule.label}: {problem}")

    def missing_column(self, rule: QualityRule, column: str, what: str = "column") -> RuleError:
        close = difflib.get_close_matches(column, self.ctx.columns, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return self.fail(
            rule,
            f"{what} '{column}' does not exist in the batch "
            f"(columns: {', '.join(self.ctx.columns)}){hint}",
        )

    def relation_of(self, rule: QualityRule, table: str) -> str:
        """The relation holding config table ``table``'s current rows."""
        relation = self.ctx.references.get(table)
        if relation is None:
            # every config table: ``references`` holds only those the rules name correctly
            configured = ", ".join(self.ctx.tables) or "none"
            raise self.fail(
                rule,
                f"table '{table}' is not a configured table; add it to tables: in "
                f"riverbed.yaml (configured: {configured})",
            )
        return relation
