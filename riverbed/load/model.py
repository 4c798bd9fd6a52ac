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
  ``customer_key``, resolved as of the event), ``event_ts`` (the source commit time), ``_op``,
  ``_lsn``, ``_seq`` (the source position, unique per row) and ``batch_id``.

Column types come from the staged Parquet schema (Arrow), mapped per dialect by sqlglot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from riverbed.config.models import RiverbedConfig

FAR_FUTURE = "9999-12-31 00:00:00+00"  # expiry_date of the current version
CDC_COLUMNS = ("_op", "_commit_ts", "_lsn", "_seq", "_xid", "_toast_unchanged")


@dataclass(frozen=True)
class DimensionModel:
    source: str  # the source table (config key), e.g. customers
    name: str  # the warehouse table, e.g. dim_customer
    keys: tuple[str, ...]  # natural key columns
    tracked: tuple[str, ...]  # a change here makes a new version
    type1: tuple[str, ...]  # overwritten in place on the current version

    @property
    def surrogate(self) -> str:
        return f"{self.name.removeprefix('dim_')}_key"

    @property
    def staging(self) -> str:
        return f"stg_{self.source}"


@dataclass(frozen=True)
class FactModel:
    source: str
    name: str
    keys: tuple[str, ...]
    dimensions: tuple[tuple[str, DimensionModel], ...]  # (fact column, dimension it keys into)

    @property
    def staging(self) -> str:
        return f"stg_{self.source}"

    def carrying(self, columns: Iterable[str]) -> FactModel:
        """This fact with only the dimensions whose key column it has among ``columns``: a
        fact keys into a dimension only if its source rows name that dimension's key."""
        present = set(columns)
        refs = tuple((column, dim) for column, dim in self.dimensions if column in present)
        return FactModel(self.source, self.name, self.keys, refs)


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
        DimensionModel(name, cfg.target, tuple(cfg.keys), tuple(cfg.tracked), tuple(cfg.type1))
        for name, cfg in config.tables.items()
        if cfg.kind == "dimension"
    )
    by_key = {d.keys: d for d in dimensions if len(d.keys) == 1}
    facts = []
    for name, cfg in config.tables.items():
        if cfg.kind != "fact":
            continue
        # a fact column named like a dimension's (single) natural key keys into it
        refs = tuple((dim.keys[0], dim) for keys, dim in by_key.items() if keys[0] not in cfg.keys)
        facts.append(FactModel(name, cfg.target, tuple(cfg.keys), refs))
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
