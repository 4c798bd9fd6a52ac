"""Spark: the transform engine for batches that outgrow one DuckDB process.

Why Spark: the same statements, the same Arrow in and out, but run on a cluster (or on every
core of one machine with ``local[*]``) when a batch is too big for DuckDB's memory, or when the
lake is already next to a Spark cluster. DuckDB stays the default; Spark is a drop-in engine
behind the same :class:`~riverbed.transform.engine.TransformEngine` protocol.

How results are made identical to DuckDB's:

- Statements arrive as sqlglot expressions in DuckDB's dialect and are generated for Spark
  with ``statement.sql(dialect="spark")``; sqlglot rewrites what differs in spelling
  (``TIMESTAMP`` -> ``TIMESTAMP_NTZ``, ``regexp_matches`` -> ``RLIKE``, DuckDB's NULL ordering
  -> explicit ``NULLS LAST``, ``concat`` skipping NULLs -> ``COALESCE`` arguments).
- The session is pinned to DuckDB's behaviour where Spark has a switch (:data:`SESSION_CONF`):
  UTC session time zone, ANSI mode on (DuckDB raises on overflow and on bad casts instead of
  wrapping or returning NULL; Spark without ANSI wraps ``int`` overflow silently and turns
  ``CAST('x' AS INT)`` into NULL), proleptic Gregorian dates in Parquet (``CORRECTED``: what
  pyarrow writes and DuckDB reads, so dates before 1582 are not shifted or refused).
- Arrow goes in through Spark 4's Arrow path (no pandas); naive Arrow timestamps become
  ``TIMESTAMP_NTZ`` and UTC ones ``TIMESTAMP``, so types survive the round trip.
- Results come back with ``DataFrame.toArrow()`` and are *conformed* (:func:`conform`):
  instants as ``timestamp[us, tz=UTC]``, ``TIMESTAMP_NTZ`` as ``timestamp[us]``, times as
  ``time64[us]``, list items named like DuckDB's, and every field nullable, as DuckDB reports.

What is not made identical, so the statement has to say it (``tests/test_spark_engine.py``
pins every known case):

- Result *types* of arithmetic, aggregates and ranking follow each engine's rules: DuckDB's
  ``sum(int)`` is ``int128`` (``decimal128(38, 0)`` in Arrow), Spark's ``int64``;
  ``row_number()``, ``rank()``, ``length()`` are ``int64`` in DuckDB, ``int32`` in Spark;
  decimal sums, products and ``round``/``floor`` get other precisions; ``avg(decimal)`` is
  ``double`` in DuckDB. Staged columns must be ``CAST`` to their target type;
  :func:`comparable` compares such results by value.
- A few values: ``x / 0`` is NULL in DuckDB and an error here (write ``NULLIF(x, 0)``);
  ``CAST(decimal AS INT)`` rounds in DuckDB and truncates in Spark; instants cast to text get
  ``+00`` only in DuckDB; ``date + INTERVAL`` is a timestamp in DuckDB, a date in Spark.
- Shapes sqlglot does not carry over: ``regexp_*`` option arguments, ``QUALIFY`` over
  ``SELECT *``, ``epoch_ms(timestamp)``, ``concat`` of non-strings, ``FIRST(x ORDER BY y)``.

Limits: results are collected to the driver (this process) as Arrow record batches, so one
query's result must fit in memory here even when the work is distributed; registered Arrow
tables are shipped to the JVM once per ``register``. One Spark session (one JVM) serves the
whole process: it takes ~10 s to start, so engines share it and each gets its own child
session (its own temporary views and SQL settings); :func:`stop_session` ends it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from py4j.protocol import Py4JError, Py4JJavaError, Py4JNetworkError
from pyspark.errors import AnalysisException, PySparkException
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.logger import PySparkLogger
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema
from sqlglot import ErrorLevel, exp
from sqlglot.errors import UnsupportedError

from riverbed.lake.parquet import dataset
from riverbed.transform.engine import TransformEngineError

if TYPE_CHECKING:
    from riverbed.lake.crypto import LakeCrypto

SPARK_DIALECT = "spark"

SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    # DuckDB raises on integer/decimal overflow and on CAST('x' AS INT); so does ANSI mode.
    # Without it Spark wraps overflowing integers and returns NULL for bad casts: silent
    # wrong data. (ANSI's one visible difference: Spark raises on x / 0 where DuckDB gives NULL.)
    "spark.sql.ansi.enabled": "true",
    # Parquet from pyarrow carries no Spark version: without CORRECTED, Spark refuses dates
    # before 1582 and timestamps before 1900 ("SparkUpgradeException") instead of reading them
    # as the proleptic Gregorian values that pyarrow wrote and DuckDB reads.
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
    # Naive timestamps in Parquet stay naive (TIMESTAMP_NTZ), as in DuckDB.
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    # PostgreSQL time columns arrive as time64[us]; Spark 4 only reads them with this on.
    "spark.sql.timeType.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Fail instead of silently falling back to the row-by-row pickling path.
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.execution.arrow.useLargeVarTypes": "false",
    "spark.sql.pyspark.jvmStacktrace.enabled": "false",
}
"""SQL settings of every engine's session: where Spark and DuckDB differ, DuckDB's way."""

_STARTUP_CONF: dict[str, str] = {
    "spark.app.name": "riverbed-transform",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}

_LOCAL_CONF: dict[str, str] = {
    # local mode runs everything in the driver's JVM; Spark's 1g default runs out of heap on a
    # batch of a million rows handed over as Arrow
    "spark.driver.memory": "4g",
    # 200 shuffle partitions (the default) means 200 tiny tasks per join on a laptop.
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
}

_lock = threading.Lock()
_root: SparkSession | None = None  # the process's one session; engines use child sessions of it
_root_master: str | None = None
_stop_at_exit = False


class SparkEngine:
    """Runs statements on a Spark session shared by every ``SparkEngine`` of the process.

    Each engine works in its own child session (``newSession()``): its own temporary views and
    SQL settings, the shared SparkContext. ``master`` and the settings Spark reads only at
    startup (``spark.driver.memory``...) are fixed by the first engine; a later engine asking
    for others is an error. SQL settings in ``conf`` (``spark.sql.*``) apply to this engine.
    """

    name = "spark"
    keeps_input_order = False  # partitions come back in any order
    returns_reference_types = False  # widens decimal products, counts in int32, ...

    def __init__(self, master: str = "local[*]", conf: Mapping[str, str] | None = None):
        wanted = {**(_LOCAL_CONF if master.startswith("local") else {}), **(conf or {})}
        self._root = _shared_session(master, wanted)
        self._spark: Any = self._root.newSession()
        runtime = self._spark.conf
        for key, value in {**SESSION_CONF, **wanted}.items():
            if runtime.isModifiable(key):
                runtime.set(key, value)
        self._views: set[str] = set()

    def register(self, name: str, table: pa.Table) -> None:
        spark = self._session()
        schema = _spark_schema(name, table.schema)
        try:
            # Spark 4 takes Arrow as is (no pandas); dictionary columns are decoded on the way.
            frame = spark.createDataFrame(table, schema=schema)
            frame.createOrReplaceTempView(name)
        except (PySparkException, Py4JError, pa.ArrowException) as exc:
            raise _engine_error(exc, f"cannot register {name!r}") from exc
        self._views.add(name)

    def register_files(
        self, name: str, paths: list[str], schema: pa.Schema, crypto: LakeCrypto | None = None
    ) -> None:
        if not paths:
            self.register(name, schema.empty_table())
            return
        if crypto is not None:
            # Spark decrypts Parquet only through a KMS class of its own on the JVM: pyarrow
            # reads the files here, on the driver, and Spark takes the rows as Arrow (bounded
            # by the driver's memory, spark.driver.memory)
            files = dataset(paths, schema, crypto)
            self.register(name, files.to_table())
            return
        spark = self._session()
        try:
            # The caller's schema, not Spark's inference: no footer is read until the query runs
            frame = spark.read.schema(_spark_schema(name, schema)).parquet(*paths)
            frame.createOrReplaceTempView(name)
        except (PySparkException, Py4JError) as exc:
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            raise _engine_error(exc, f"cannot read {name!r} from {paths[0]}{more}") from exc
        self._views.add(name)

    def register_view(self, name: str, statement: exp.Expression) -> None:
        spark = self._session()
        text = self._text(statement)
        try:
            spark.sql(text).createOrReplaceTempView(name)
        except (PySparkException, Py4JError) as exc:
            error = _engine_error(exc)
            raise TransformEngineError(
                f"{error}\n  Spark SQL: {text}", transient=error.transient
            ) from exc
        self._views.add(name)

    def _text(self, statement: exp.Expression) -> str:
        try:
            return statement.sql(dialect=SPARK_DIALECT, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError as exc:
            raise TransformEngineError(
                f"spark: this statement has no Spark SQL form ({exc}); rewrite it with "
                "functions both DuckDB and Spark have, or run it on duckdb"
            ) from exc

    def query(self, statement: exp.Expression) -> pa.Table:
        spark = self._session()
        text = self._text(statement)
        try:
            return conform(spark.sql(text).toArrow())
        except (PySparkException, Py4JError) as exc:
            error = _engine_error(exc)
            # Spark's positions ("line 1 pos 14") are in the generated text, so show it
            raise TransformEngineError(
                f"{error}\n  Spark SQL: {text}", transient=error.transient
            ) from exc

    def close(self) -> None:
        """Drop this engine's views (freeing registered tables); the shared session stays."""
        if self._root is _root:  # otherwise stopped already: the views went with it
            # a JVM that died took the views with it; closing must not fail on that
            with contextlib.suppress(PySparkException, Py4JError):
                for view in self._views:
                    self._spark.catalog.dropTempView(view)
        self._views.clear()

    def _session(self) -> Any:
        if self._root is not _root:
            raise TransformEngineError(
                "spark: this engine's Spark session was stopped (stop_session()); "
                "open a new SparkEngine"
            )
        return self._spark


def stop_session() -> None:
    """Stop the process's shared Spark session, if any. Runs at exit; safe to call twice.

    Engines opened before cannot be used afterwards; the next ``SparkEngine`` starts a new one.
    """
    global _root, _root_master
    with _lock:
        if _root is not None:
            _root.stop()
        _root, _root_master = None, None


def _shared_session(master: str, conf: Mapping[str, str]) -> SparkSession:
    global _root, _root_master, _stop_at_exit
    with _lock:
        if _root is None:
            builder: Any = SparkSession.builder.master(master)
            for key, value in {**_STARTUP_CONF, **SESSION_CONF, **conf}.items():
                builder = builder.config(key, value)
            _root, _root_master = builder.getOrCreate(), master
            _root.sparkContext.setLogLevel("ERROR")
            _quiet_python_loggers()
            if not _stop_at_exit:
                atexit.register(stop_session)
                _stop_at_exit = True
            return _root
        if master != _root_master:
            raise TransformEngineError(
                f"spark: this process already runs Spark with master {_root_master!r}, "
                f"not {master!r}; use one master per process (or call stop_session() first)"
            )
        for key, value in conf.items():
            current = _root.conf.get(key, None)
            if current != value and not _root.conf.isModifiable(key):
                running = repr(current) if current else "the default"
                raise TransformEngineError(
                    f"spark: {key}={value!r} can only be set when Spark starts, and this "
                    f"process's Spark runs with {running}; give every SparkEngine the same "
                    "startup settings (or call stop_session() first)"
                )
        return _root


def _quiet_python_loggers() -> None:
    # PySpark logs every failed statement with its whole JVM stack trace at ERROR, before the
    # exception reaches us; we raise it translated, with its message, so that log is noise.
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


# --- Arrow in ------------------------------------------------------------------------------


def _spark_schema(relation: str, schema: pa.Schema) -> Any:
    for field in schema:
        problem = _unsupported(field.type)
        if problem:
            raise TransformEngineError(
                f"spark: column {relation}.{field.name} is {field.type}: {problem}"
            )
    # Naive Arrow timestamps become TIMESTAMP_NTZ (as DuckDB's TIMESTAMP), not instants.
    return from_arrow_schema(schema, prefer_timestamp_ntz=True)


def _unsupported(type_: pa.DataType) -> str | None:
    if isinstance(type_, pa.Decimal256Type) and type_.precision > 38:
        return "Spark decimals hold at most 38 digits; run this transform on duckdb"
    if pa.types.is_unsigned_integer(type_):
        return "Spark has no unsigned integers; cast the column to a signed type first"
    if pa.types.is_timestamp(type_) and type_.tz not in (None, "UTC", "+00:00"):
        return "Riverbed keeps instants in UTC; cast the column to timestamp[us, tz=UTC]"
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _unsupported(type_.value_type)
    return None


# --- Arrow out -----------------------------------------------------------------------------

_DUCKDB_LIST_ITEM = "l"  # DuckDB names a list's item field "l", Spark "element"


def conform(table: pa.Table) -> pa.Table:
    """Spark's Arrow result with the types DuckDB would give the same values.

    Timestamps in microseconds (instants in UTC), times in microseconds, list items named like
    DuckDB's, every field nullable. Integer widths and decimal precisions stay Spark's.
    """
    schema = pa.schema([_conform_field(field) for field in table.schema])
    return table if schema == table.schema else table.cast(schema)


def _conform_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, _conform_type(field.type), nullable=True)


def _conform_type(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(type_):
        return pa.timestamp("us", tz="UTC" if type_.tz is not None else None)
    if pa.types.is_time(type_):
        return pa.time64("us")
    if pa.types.is_list(type_):
        item = type_.value_field
        return pa.list_(pa.field(_DUCKDB_LIST_ITEM, _conform_type(item.type), nullable=True))
    if pa.types.is_struct(type_):
        return pa.struct([_conform_field(type_.field(i)) for i in range(type_.num_fields)])
    return type_


def comparable(table: pa.Table) -> pa.Table:
    """``table`` with every number widened, to compare results across engines by value.

    Integers and decimals become ``decimal128(38, scale)`` (integers with scale 0), floats
    ``float64``: the types in which DuckDB's and Spark's arithmetic and aggregate results, which
    differ in width and precision (``sum(int)`` is ``int128`` in one and ``int64`` in the other),
    hold the same values. Scales are kept: they differ only where values do (``avg`` of a
    decimal is ``double`` in DuckDB).
    """
    schema = pa.schema([pa.field(f.name, _widen(f.type), f.nullable) for f in table.schema])
    return table.cast(schema)


def _widen(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_signed_integer(type_):
        return pa.decimal128(38, 0)
    if pa.types.is_decimal(type_) and type_.precision <= 38:
        return pa.decimal128(38, type_.scale)
    if pa.types.is_floating(type_):
        return pa.float64()
    return type_


# --- errors --------------------------------------------------------------------------------


def _engine_error(exc: BaseException, context: str | None = None) -> TransformEngineError:
    """The one place where Spark, Py4J and Arrow errors become Riverbed's."""
    prefix = f"spark: {context}: " if context else "spark: "
    if isinstance(exc, Py4JNetworkError):  # the JVM died (killed, out of memory)
        lost = f"{prefix}the Spark JVM is unreachable ({_first_line(str(exc))})"
        return TransformEngineError(lost, transient=True)
    chain = _java_chain(exc)
    if isinstance(exc, AnalysisException):  # bad SQL, unknown table or column: retrying can't help
        return TransformEngineError(prefix + _headline(exc, chain))
    io_error = any(_is_java(error, "java.io.IOException") for error in chain)
    return TransformEngineError(prefix + _headline(exc, chain), transient=io_error)


def _java_chain(exc: BaseException) -> list[Any]:
    """The Java exception behind ``exc`` and its causes, outermost first."""
    if isinstance(exc, CapturedException):
        error = exc._origin
    elif isinstance(exc, Py4JJavaError):
        error = exc.java_exception
    else:
        return []
    chain: list[Any] = []
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.getCause()
    return chain


def _headline(exc: BaseException, chain: list[Any]) -> str:
    """One line: Spark's own message (``[ERROR_CLASS] ...``) and the root cause, if another.

    Job failures arrive wrapped ("Exception thrown in awaitResult"), and Spark's message about
    a file names the file but not what is wrong with it; the root cause says that.
    """
    if not chain:
        return _first_line(str(exc)) or type(exc).__name__
    from pyspark import SparkContext

    jvm: Any = SparkContext._jvm
    spark_errors = [
        error
        for error in chain
        if _is_java(error, "org.apache.spark.SparkThrowable")
        and jvm.PythonErrorUtils.getCondition(error)
    ]
    main = spark_errors[0] if spark_errors else chain[-1]
    line = _first_line(str(main.getMessage() or main.toString()))
    root = chain[-1]
    if root.equals(main):
        return line
    return f"{line} (caused by {_first_line(str(root.toString()))})"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _is_java(error: Any, class_name: str) -> bool:
    from py4j.java_gateway import is_instance_of
    from pyspark import SparkContext

    return bool(is_instance_of(SparkContext._gateway, error, class_name))
