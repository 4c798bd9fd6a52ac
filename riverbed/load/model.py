"""The warehouse model the config implies: staging tables, SCD2 dimensions, event facts.

Per source table in ``tables:``:

* a staging table ``stg_<table>`` (truncate-and-load of one staged batch);
* ``kind: dimension`` -> an SCD Type 2 table named by ``target``: a surrogate key
  ``<name>_key`` (name = target without ``dim_``), the natural key columns, the tracked and type1
  columns and every other source column, then ``effective_date``, ``expiry_date``,
  ``is_current_record``, ``is_deleted``, ``is_inferred`` and the source position of the version
  (``_lsn``, ``_seq``);
* ``kind: fact`` -> an append-only event table named by ``target``: every source column, the
  surrogate key of each dimension whose natural key it carries (``customer_id`` ->
  ``customer_key``, resolved as of the event), ``event_ts`` (the ``event_time`` column, else the
  source commit time), ``_op``,
  ``_lsn``, ``_seq`` (the source position, unique per row) and ``batch_id``; and a view of its
  current state, one row per live source key, named by ``current_view`` (``<target>_current``
  by default; see riverbed.load.fact_current).

Column types come from the staged Parquet schema (Arrow), mapped per dialect by sqlglot. When
the source changes a column's type, ``holding_type`` decides what the warehouse column becomes:
a type that holds every value of the old and the new one, from a fixed list of widenings
(see its docstring), or none, and the load stops rather than lose data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import pyarrow as pa
from sqlglot import exp

from riverbed.config.models import RiverbedConfig
from riverbed.config.tables import Versions
from riverbed.lake.schema import COMMIT_TS, LSN, OP, SEQ, TOAST_UNCHANGED

FAR_FUTURE = "9999-12-31 00:00:00+00"  # expiry_date of the current version
BATCH_ID = "_batch_id"  # the staged batch a staging row came from (staging holds several)
# what a staging table holds besides the source columns, and its SQL types: the CDC columns a
# load reads (_toast_unchanged as the names joined by commas) and the batch
STAGING_CDC_TYPES = {
    OP: "TEXT",
    COMMIT_TS: "TIMESTAMPTZ",
    LSN: "BIGINT",
    SEQ: "BIGINT",
    TOAST_UNCHANGED: "TEXT",
    BATCH_ID: "TEXT",
}


@dataclass(frozen=True)
class DimensionModel:
    source: str  # the source table (config key), e.g. customers
    name: str  # the warehouse table, e.g. dim_customer
    keys: tuple[str, ...]  # natural key columns
    tracked: tuple[str, ...]  # a change here makes a new version
    type1: tuple[str, ...]  # overwritten in place on the current version
    versions: Versions = "per_transaction"  # one version per source transaction, or per change
    effective_from: str | None = None  # the column versions are valid from; None: commit time

    @property
    def surrogate(self) -> str:
        return f"{self.name.removeprefix('dim_')}_key"

    @property
    def staging(self) -> str:
        return staging_table(self.source)


def staging_table(source: str) -> str:
    """The staging table of config table ``source``."""
    return f"stg_{source}"


@dataclass(frozen=True)
class FactModel:
    source: str
    name: str
    keys: tuple[str, ...]
    dimensions: tuple[tuple[str, DimensionModel], ...]  # (fact column, dimension it keys into)
    current_view: str | None = None  # the config's name for the view; None: the default
    event_time: str | None = None  # the column that dates an event; None: its commit time

    @property
    def staging(self) -> str:
        return staging_table(self.source)

    @property
    def view(self) -> str:
        """The view of the fact's current state (riverbed.load.fact_current)."""
        return self.current_view or f"{self.name}_current"

    def carrying(self, columns: Iterable[str]) -> FactModel:
        """This fact with only the dimensions whose key column it has among ``columns``: a
        fact keys into a dimension only if its source rows name that dimension's key."""
        present = set(columns)
        refs = tuple((column, dim) for column, dim in self.dimensions if column in present)
        return replace(self, dimensions=refs)


@dataclass(frozen=True)
class WarehouseModel:
    dimensions: tuple[DimensionModel, ...]
    facts: tuple[FactModel, ...]

    def dimension(self, source: str) -> DimensionModel | None:
        return next((d for d in self.dimensions if d.source == source), None)

    def by_source(self, source: str) -> DimensionModel | FactModel:
        found = self.dimension(source) or next((f for f in self.facts if f.source == source), None)
        if found is None:
            raise KeyError(source)
        return found


def warehouse_model(config: RiverbedConfig) -> WarehouseModel:
    dimensions = tuple(
        DimensionModel(
            name,
            cfg.target,
            tuple(cfg.keys),
            tuple(cfg.tracked),
            tuple(cfg.type1),
            cfg.versions,
            cfg.effective_from,
        )
        for name, cfg in config.tables.items()
        if cfg.kind == "dimension"
    )
    by_key = {d.keys: d for d in dimensions if len(d.keys) == 1}
    facts = []
    for name, cfg in config.tables.items():
        if cfg.kind != "fact":
            continue
        # a fact column named like a dimension's (single) natural key keys into it, also as
        # part of the fact's own key (feedings keyed by animal_id, fed_on); only a fact keyed
        # by that column alone is the dimension's row, not an event that refers to it
        refs = tuple((dim.keys[0], dim) for keys, dim in by_key.items() if [*keys] != cfg.keys)
        facts.append(
            FactModel(name, cfg.target, tuple(cfg.keys), refs, cfg.current_view, cfg.event_time)
        )
    return WarehouseModel(dimensions, tuple(facts))


def sql_type(arrow_type: pa.DataType) -> exp.DataType:
    """The SQL type of an Arrow type, as a sqlglot node (generated per dialect)."""
    if pa.types.is_boolean(arrow_type):
        return exp.DataType.build("BOOLEAN")
    if pa.types.is_int8(arrow_type) or pa.types.is_int16(arrow_type):
        return exp.DataType.build("SMALLINT")
    if pa.types.is_int32(arrow_type):
        return exp.DataType.build("INT")
    if pa.types.is_integer(arrow_type):
        return exp.DataType.build("BIGINT")
    if pa.types.is_float32(arrow_type):
        return exp.DataType.build("REAL")
    if pa.types.is_floating(arrow_type):
        return exp.DataType.build("DOUBLE")
    if pa.types.is_decimal(arrow_type):
        return exp.DataType.build(f"DECIMAL({arrow_type.precision}, {arrow_type.scale})")
    if pa.types.is_date(arrow_type):
        return exp.DataType.build("DATE")
    if pa.types.is_time(arrow_type):
        return exp.DataType.build("TIME")
    if pa.types.is_timestamp(arrow_type):
        return exp.DataType.build("TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP")
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return exp.DataType.build("VARBINARY")
    return exp.DataType.build("TEXT")  # strings, and lists kept as their text


_T = exp.DType
_INTEGER_DIGITS = {_T.SMALLINT: 5, _T.INT: 10, _T.BIGINT: 19}  # decimal digits of the largest
# bits a float's mantissa holds, and a float's needed by each type held exactly (bigint: none)
_MANTISSA_BITS = {_T.FLOAT: 24, _T.DOUBLE: 53}
_NEEDS_BITS = {_T.SMALLINT: 16, _T.INT: 32, _T.FLOAT: 24, _T.DOUBLE: 53}
_TEXTS = {_T.TEXT, _T.VARCHAR, _T.CHAR, _T.NCHAR, _T.NVARCHAR, _T.BPCHAR}

_Shape = tuple[exp.DType, tuple[int, ...]]


def same_type(a: exp.DataType, b: exp.DataType) -> bool:
    """Whether ``a`` and ``b`` are one type, however each engine spells it (``INTEGER`` and
    ``INT``, ``VARCHAR`` and ``TEXT``, ``TIMESTAMP`` and ``TIMESTAMP WITHOUT TIME ZONE``)."""
    return _shape(a) == _shape(b)


def holding_type(current: exp.DataType, incoming: exp.DataType) -> exp.DataType | None:
    """The type a warehouse column of type ``current`` becomes to take values of ``incoming``
    (the lake's type after the source changed it) without losing any: ``current`` itself when
    it holds them already (the same type, or a source column narrowed again), a widening of it,
    or None when no type on this list holds both (e.g. text and int, bigint and double):

    * integers: smallint < int < bigint;
    * an integer and numeric(p, s): numeric with the integer's digits (5, 10, 19) and s;
    * numeric(p1, s1) and numeric(p2, s2): numeric(max(p1 - s1, p2 - s2) + max(s1, s2),
      max(s1, s2)), as many integer digits and as much scale as either;
    * real < double; smallint into real or double, int into double (exact: the mantissa holds
      them; bigint, and numeric, into no float);
    * varchar(n), char(n), text: text;
    * date into timestamp (midnight; not timestamptz, whose meaning needs a time zone).
    """
    a, b = _shape(current), _shape(incoming)
    if a == b:
        return current
    ka, kb = a[0], b[0]
    kinds = {ka, kb}
    if kinds <= _TEXTS:
        return exp.DataType.build("TEXT")
    if ka in _INTEGER_DIGITS and kb in _INTEGER_DIGITS:
        return exp.DataType.build(max(ka, kb, key=_INTEGER_DIGITS.__getitem__).value)
    decimals = [
        (_INTEGER_DIGITS[k], 0) if k in _INTEGER_DIGITS else (p[0] - p[1], p[1])
        for k, p in (a, b)
        if k in _INTEGER_DIGITS or (k == _T.DECIMAL and len(p) == 2)
    ]
    if len(decimals) == 2:
        digits = max(d for d, _ in decimals)
        scale = max(s for _, s in decimals)
        return exp.DataType.build(f"DECIMAL({digits + scale}, {scale})")
    if kinds & set(_MANTISSA_BITS) and kinds <= set(_NEEDS_BITS):
        bits = max(_NEEDS_BITS[k] for k in kinds)
        return exp.DataType.build(next(k for k, m in _MANTISSA_BITS.items() if m >= bits).value)
    if kinds == {_T.DATE, _T.TIMESTAMP}:
        return exp.DataType.build("TIMESTAMP")
    return None


def _shape(kind: exp.DataType) -> _Shape:
    """``kind`` as (type, integer parameters), one spelling per type."""
    try:
        params = tuple(int(p.name) for p in kind.expressions)
    except ValueError:  # not a length, precision or scale: compared as written
        return kind.this, (hash(kind.sql()),)
    if kind.this == _T.TIMESTAMPNTZ:
        return _T.TIMESTAMP, params
    if kind.this in _TEXTS and (kind.this == _T.TEXT or not params):
        return _T.TEXT, ()  # unbounded: DuckDB's VARCHAR, PostgreSQL's text
    if kind.this == _T.DECIMAL and len(params) == 1:
        return _T.DECIMAL, (params[0], 0)
    return kind.this, params
