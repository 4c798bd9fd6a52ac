"""What a table's quality rules compile against (``RuleContext``: the table, its keys, the
batch's columns and types, the relations of current rows, the recent batch sizes, the moment
``now``), and the error a rule that cannot run raises (``RuleError``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

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
