"""The ``schema`` rule, run in Python on the batch's Arrow schema rather than in SQL: each
configured column must exist with the Arrow type Riverbed gives its PostgreSQL type.

A type is read as PostgreSQL spells it (bigint, numeric(12,2), timestamptz, text[] ...). Types
the lake keeps as their text (uuid, json, interval, money, inet ...; see lake.pgtypes) match a
string column, and so does numeric without a typmod, which is lossless only as text; numeric
with one must match precision and scale exactly. An unknown type name is a RuleError at compile
time (``parse_type`` is None), never a silent pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import SqlglotError

from riverbed.config.tables import QualityRule
from riverbed.transform.rules.context import RuleError


def check_schema(rule: QualityRule, schema: pa.Schema) -> tuple[bool, str]:
    """Run a ``schema`` rule in Python: every column of ``rule.columns`` exists in ``schema``
    with the Arrow type Riverbed gives that SQL type. Returns (passed, observed), where
    observed lists the mismatches. Raises RuleError for a type name it does not know."""
    problems: list[str] = []
    for name, sql_type in (rule.columns or {}).items():
        expected = parse_type(sql_type)
        if expected is None:
            raise RuleError(f"rule {rule.label}: {unknown_type(sql_type)}")
        index = schema.get_field_index(name)
        if index < 0:
            problems.append(f"{name}: missing (expected {sql_type})")
        elif not _type_matches(expected, schema.field(index).type):
            problems.append(f"{name}: expected {sql_type}, found {schema.field(index).type}")
    if problems:
        return False, "; ".join(problems)
    return True, f"{len(rule.columns or {})} columns match"


_STRING_TYPES = frozenset(
    {
        exp.DType.TEXT,
        exp.DType.VARCHAR,
        exp.DType.CHAR,
        exp.DType.BPCHAR,
        exp.DType.NCHAR,
        exp.DType.NVARCHAR,
        # Riverbed's lake keeps these PostgreSQL types as their text (see lake.pgtypes).
        exp.DType.UUID,
        exp.DType.JSON,
        exp.DType.JSONB,
        exp.DType.INTERVAL,
        exp.DType.MONEY,
        exp.DType.INET,
        exp.DType.XML,
        exp.DType.TIMETZ,
    }
)

_FIXED: dict[exp.DType, Callable[[pa.DataType], bool]] = {
    exp.DType.BIGINT: pa.types.is_int64,
    exp.DType.INT: pa.types.is_int32,
    exp.DType.SMALLINT: pa.types.is_int16,
    exp.DType.TINYINT: pa.types.is_int8,
    exp.DType.BOOLEAN: pa.types.is_boolean,
    exp.DType.DATE: pa.types.is_date,
    exp.DType.TIME: pa.types.is_time,
    exp.DType.DOUBLE: pa.types.is_float64,
    exp.DType.FLOAT: pa.types.is_float32,
    exp.DType.VARBINARY: lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
    exp.DType.BINARY: lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
    exp.DType.TIMESTAMP: lambda t: pa.types.is_timestamp(t) and t.tz is None,
    exp.DType.TIMESTAMPTZ: lambda t: pa.types.is_timestamp(t) and t.tz is not None,
}


def _is_string(arrow: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(arrow)
        or pa.types.is_large_string(arrow)
        or pa.types.is_string_view(arrow)
    )


def parse_type(sql_type: str) -> exp.DataType | None:
    """A type as PostgreSQL spells it (bigint, numeric(12,2), timestamptz, text[] ...), or
    None when Riverbed does not know it."""
    try:
        parsed = exp.DataType.build(sql_type, dialect="postgres")
    except (SqlglotError, ValueError):
        return None
    return parsed if _known(parsed) else None


def unknown_type(sql_type: str) -> str:
    return (
        f"unknown column type '{sql_type}'; use a PostgreSQL type name like bigint, integer, "
        "text, boolean, date, timestamptz, numeric(12,2), double precision or bytea"
    )


def _known(parsed: exp.DataType) -> bool:
    kind = parsed.this
    if kind == exp.DType.ARRAY:
        inner = parsed.expressions[0] if parsed.expressions else None
        return isinstance(inner, exp.DataType) and _known(inner)
    return kind in _FIXED or kind in _STRING_TYPES or kind == exp.DType.DECIMAL


def _type_matches(expected: exp.DataType, arrow: pa.DataType) -> bool:
    kind = expected.this
    if kind in _STRING_TYPES:
        return _is_string(arrow)
    if kind == exp.DType.DECIMAL:
        params = [int(p.name) for p in expected.expressions]
        if not params:
            return _is_string(arrow)  # numeric without a typmod is lossless only as text
        precision, scale = params[0], params[1] if len(params) > 1 else 0
        return bool(
            pa.types.is_decimal(arrow) and arrow.precision == precision and arrow.scale == scale
        )
    if kind == exp.DType.ARRAY:
        is_list = pa.types.is_list(arrow) or pa.types.is_large_list(arrow)
        return is_list and _type_matches(expected.expressions[0], arrow.value_type)
    return bool(_FIXED[kind](arrow))
