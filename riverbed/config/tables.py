"""riverbed.yaml's ``transform:`` and ``tables:`` sections: the engine that transforms batches,
and per table its keys, history columns, transforms, filter, PII handling and quality rules.

Every piece of SQL in a table (a transform, the filter, a rule's ``sql``) is parsed at load
(``_check_sql``), so a typo fails there and not mid-run; each rule type's required settings
(``RULE_REQUIRES``) are checked at load too, so a rule never fails at run time for want of one.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from riverbed.config.fields import IDENTIFIER, Model

TransformEngine = Literal["duckdb", "spark"]  # transform.engine, and `riverbed run --engine`
# tables.<t>.versions: what a dimension versions. per_transaction: the state each source
# transaction leaves (several changes of a key in one transaction share its commit time, so
# versions per change would be zero-length ones no as-of lookup ever finds); per_change: every
# statement's row, those zero-length versions included, for audits that want them.
Versions = Literal["per_transaction", "per_change"]


class TransformConfig(Model):
    engine: TransformEngine = "duckdb"
    spark_master: str = "local[*]"  # engine spark: any Spark master URL
    spark_conf: dict[str, str] = {}  # engine spark: extra Spark settings (spark.driver.memory ...)
    batch_rows: int = Field(1_000_000, ge=1)  # a batch takes raw files up to about this many rows
    retries: int = Field(3, ge=0, le=10)  # transient failures (I/O, a locked file), with backoff


# --- tables -------------------------------------------------------------------------------

RuleType = Literal[
    "not_null",
    "unique",
    "accepted_values",
    "not_accepted_values",
    "range",
    "not_equal",
    "regex",
    "length",
    "valid_date",
    "not_in_future",
    "references",
    "row_count",
    "freshness",
    "distinct_count",
    "mean",
    "sum",
    "schema",
    "sql_row",
    "expression",
    "sql_dataset",
]
DATASET_RULES = frozenset(
    {"row_count", "freshness", "distinct_count", "mean", "sum", "schema", "sql_dataset"}
)


PREDICATE_PREFIX = "select 1 where "  # a predicate (a row rule, a transform) parses inside it


def _check_sql(text: str, *, statement: bool) -> None:
    """Parse SQL from the config now, so a typo fails at load and not mid-run."""
    import sqlglot  # the config loads fast when no SQL is configured

    prefix = "" if statement else PREDICATE_PREFIX
    try:
        sqlglot.parse_one(prefix + text, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        description = error.get("description") or str(exc).splitlines()[0]
        line, column = error.get("line"), error.get("col")
        if line == 1 and column:  # counted in the user's text, not in the prefix
            column = max(1, column - len(prefix))
        where = f" (line {line}, column {column})" if line else ""
        raise ValueError(f"not valid SQL: {description}{where}") from None


# Which settings each rule type needs; checked at load so a rule can never fail at run time
# for want of a parameter.
RULE_REQUIRES: dict[str, tuple[str, ...]] = {
    "not_null": ("column",),
    "unique": ("column",),
    "accepted_values": ("column", "values"),
    "not_accepted_values": ("column", "values"),
    "range": ("column",),
    "not_equal": ("column", "value"),
    "regex": ("column", "pattern"),
    "length": ("column",),
    "valid_date": ("column",),
    "not_in_future": ("column",),
    "references": ("column", "reference"),
    "row_count": (),
    "freshness": ("column", "max_age_seconds"),
    "distinct_count": ("column",),
    "mean": ("column",),
    "sum": ("column",),
    "schema": ("columns",),
    "sql_row": ("sql",),
    "expression": ("sql",),
    "sql_dataset": ("sql",),
}


class QualityRule(Model):
    type: RuleType
    name: str | None = None
    action: Literal["quarantine", "warn", "fail"] = "quarantine"
    column: str | None = None
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False  # range: min itself fails
    exclusive_max: bool = False  # range: max itself fails
    value: Any = None  # not_equal: the one value a row may not hold
    pattern: str | None = None
    reference: str | None = None  # table.column
    threshold: float | None = Field(None, ge=0, le=1)
    max_age_seconds: int | None = Field(None, gt=0)
    columns: dict[str, str] | None = None
    sql: str | None = None

    @property
    def query_text(self) -> str:
        """A custom rule's SQL as one query: sql_dataset's own, sql_row's predicate in a WHERE."""
        assert self.sql is not None
        return self.sql if self.type == "sql_dataset" else PREDICATE_PREFIX + self.sql

    @property
    def dataset_level(self) -> bool:
        """Judges the batch as a whole (no single row to quarantine)."""
        return self.type in DATASET_RULES or (
            self.type == "not_null" and self.threshold is not None
        )

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, bound: float | None) -> float | None:
        # NaN compares false with everything, so `value < nan` never fails a row: the rule
        # would pass every row. An infinite bound is no bound at all.
        if bound is not None and not math.isfinite(bound):
            raise ValueError(
                "must be a finite number (NaN would pass every row, and an infinite bound is "
                "no bound); give a number, or leave the key out for no bound"
            )
        return bound

    @model_validator(mode="after")
    def _required_settings(self) -> QualityRule:
        missing = [key for key in RULE_REQUIRES[self.type] if getattr(self, key) is None]
        if missing:
            raise ValueError(f"rule type {self.type} needs {', '.join(missing)}")
        if self.dataset_level and self.action == "quarantine":
            if "action" in self.model_fields_set:
                raise ValueError(
                    f"rule type {self.type} judges the whole batch, so it cannot quarantine "
                    "rows: use action warn or fail"
                )
            object.__setattr__(self, "action", "warn")  # the default that fits a batch rule
        for key in ("sql",):
            text = getattr(self, key)
            if text is not None:
                _check_sql(text, statement=self.type == "sql_dataset")
        self._check_bounds()
        self._check_values()
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if self.reference is not None and self.reference.count(".") != 1:
            raise ValueError("reference must be table.column")
        return self

    def _check_bounds(self) -> None:
        if self.type == "range" and self.min is None and self.max is None:
            raise ValueError("rule type range needs min, max or both")
        for key, bound in (("exclusive_min", self.min), ("exclusive_max", self.max)):
            if key not in self.model_fields_set:
                continue
            if self.type != "range":
                raise ValueError(f"{key} applies to rule type range only")
            if getattr(self, key) and bound is None:
                raise ValueError(
                    f"{key} needs {key.removeprefix('exclusive_')}: the bound it makes strict"
                )
        if self.min is not None and self.max is not None:
            if self.min > self.max:
                raise ValueError(
                    f"min {self.min:g} is greater than max {self.max:g}, so no value can pass; "
                    "swap them"
                )
            if self.min == self.max and (self.exclusive_min or self.exclusive_max):
                raise ValueError(
                    f"min and max are both {self.min:g} and one is exclusive, so no value can "
                    "pass; for that one value alone, use accepted_values"
                )

    def _check_values(self) -> None:
        if self.type == "not_accepted_values":
            if any(v is None for v in self.values or []):
                raise ValueError(
                    "values: null cannot be refused here, NULL passes every rule but not_null; "
                    "take null out and add a not_null rule"
                )
            if not self.values:
                raise ValueError("rule type not_accepted_values needs at least one value in values")
        if "value" in self.model_fields_set and self.type != "not_equal":
            raise ValueError(
                "value applies to rule type not_equal only (accepted_values takes values)"
            )
        if self.value is not None and (
            isinstance(self.value, list | dict)
            or (isinstance(self.value, float) and not math.isfinite(self.value))
        ):
            raise ValueError("value must be one number, string or boolean")

    @property
    def label(self) -> str:
        return self.name or f"{self.type}({self.column or ''})"


PiiMethod = Literal["hash", "tokenize", "mask", "redact"]


class TableConfig(Model):
    kind: Literal["dimension", "fact"]
    target: str  # warehouse table, e.g. dim_customer
    keys: list[str] = Field(min_length=1)
    tracked: list[str] = []  # dimension: columns whose change makes a new SCD2 version
    type1: list[str] = []  # dimension: columns overwritten in place on the current version
    versions: Versions = "per_transaction"  # dimension: see Versions
    quality: list[QualityRule] = []
    transforms: dict[str, str] = {}  # output column: SQL expression over source + CDC columns
    filter: str | None = None
    pii: dict[str, PiiMethod] = {}
    sort_key: list[str] = []
    dist_key: str | None = None
    # fact: the view of its current state, one row per live key (<target>_current by default)
    current_view: str | None = None
    # fact: the column (date or timestamp) that dates an event: its event_ts, date_key and the
    # dimension versions it keys into; absent, the source commit time does
    event_time: str | None = None
    # dimension: the column (date or timestamp) a version is valid from, e.g. updated_at;
    # absent, the source commit time (see riverbed.load.scd2 for out-of-order times)
    effective_from: str | None = None

    @field_validator("transforms")
    @classmethod
    def _transforms_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            try:
                _check_sql(text, statement=False)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @field_validator("filter")
    @classmethod
    def _filter_parses(cls, value: str | None) -> str | None:
        if value is not None:
            _check_sql(value, statement=False)
        return value

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> TableConfig:
        if self.kind == "dimension" and not self.tracked:
            raise ValueError("a dimension needs tracked: [columns whose change makes a version]")
        if self.kind == "fact" and (self.tracked or self.type1):
            raise ValueError("tracked and type1 apply to dimensions only")
        if self.kind == "fact" and "versions" in self.model_fields_set:
            raise ValueError("versions applies to dimensions only (a fact keeps every event)")
        if self.kind == "dimension" and self.current_view is not None:
            raise ValueError("current_view applies to facts only")
        if self.kind == "dimension" and self.event_time is not None:
            raise ValueError(
                "event_time applies to facts only; a dimension's versions take their time "
                "from effective_from"
            )
        if self.kind == "fact" and self.effective_from is not None:
            raise ValueError(
                "effective_from applies to dimensions only; a fact's events take their time "
                "from event_time"
            )
        for setting in ("event_time", "effective_from"):
            name = getattr(self, setting)
            if name is not None and not IDENTIFIER.match(name):
                raise ValueError(
                    f"{setting} must name one column (letters, digits, _), not {name!r}; "
                    "compute an expression in transforms and name its output column"
                )
        both = set(self.tracked) & set(self.type1)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} cannot be both tracked and type1")
        in_keys = set(self.tracked) & set(self.keys)
        if in_keys:
            raise ValueError(f"key column {', '.join(sorted(in_keys))} cannot be tracked")
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.quality):
            # results and quarantine reasons are recorded per label: two rules cannot share one
            if rule.label in seen:
                raise ValueError(
                    f"quality.{seen[rule.label]} and quality.{i} are both named "
                    f"'{rule.label}'; give one of them its own name: NAME"
                )
            seen[rule.label] = i
        return self
