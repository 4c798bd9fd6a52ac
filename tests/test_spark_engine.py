"""SparkEngine against DuckDBEngine: one list of statements, the same Arrow inputs, the same rows.

The statements are sorted by how far the engines agree, and that sorting is the guide for
writing transform SQL that runs on both:

- ``PORTABLE``: identical ``pa.Table`` (types and values) from both engines.
- ``SAME_VALUES``: equal values, different widths/precisions; equal after ``comparable()``.
  Staged output must ``CAST`` such columns to the type it wants.
- ``DIVERGENT``: different values, or an error on one side only. Marked ``xfail(strict=True)``:
  if a sqlglot or Spark upgrade makes one of them agree, the test says so.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

pytest.importorskip("pyspark", reason="PySpark is not installed: pip install 'pyspark>=4.0'")

from riverbed.config.stores import LakeConfig  # noqa: E402
from riverbed.lake.parquet import write_table, writer_options  # noqa: E402
from riverbed.lake.storage import open_storage  # noqa: E402
from riverbed.transform.duckdb_engine import DuckDBEngine  # noqa: E402
from riverbed.transform.engine import DIALECT, TransformEngineError  # noqa: E402
from riverbed.transform.spark_engine import (  # noqa: E402
    SparkEngine,
    comparable,
    conform,
    stop_session,
)

ORDERS = pa.table(
    {
        "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
        "customer_id": pa.array([10, 10, 20, 20, 30, None], pa.int32()),
        "qty": pa.array([1, 2, None, 4, 5, 300], pa.int16()),
        "amount": pa.array(
            [
                Decimal("10.50"),
                Decimal("0.01"),
                None,
                Decimal("9999999999.99"),
                Decimal("-3.25"),
                Decimal("7.00"),
            ],
            pa.decimal128(12, 2),
        ),
        "status": [" paid", "open ", None, "PAID", "refunded", ""],
        "placed_on": ["2024-01-05", "not a date", None, "2024-02-30", "2023-12-31", "2024-03-01"],
        "qty_text": ["12", "x", None, " 7", "-3", "99999999999"],
        "paid_at": pa.array(
            [
                datetime(2024, 1, 1, tzinfo=UTC),
                datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
                None,
                datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
                datetime(1900, 1, 1, tzinfo=UTC),
                datetime(2024, 6, 1, 12, tzinfo=UTC),
            ],
            pa.timestamp("us", tz="UTC"),
        ),
        "local_at": pa.array(
            [
                datetime(2024, 1, 1),
                None,
                datetime(2024, 1, 2, 3, 4, 5),
                None,
                None,
                datetime(1, 1, 1),
            ],
            pa.timestamp("us"),
        ),
        "is_gift": [True, False, None, True, None, False],
        "ship_day": pa.array(
            [date(2024, 1, 1), None, date(1500, 1, 1), date(2024, 2, 29), None, None]
        ),
        "card": pa.array([b"k1", b"k2", None, b"k1", b"", b"\x00\xff"], pa.binary()),
        "email": ["ann@example.com", "zoë@example.com", None, "ANN@example.com", "", "b@x"],
    }
)
CUSTOMERS = pa.table(
    {
        "customer_id": pa.array([10, 20, 40], pa.int32()),
        "name": ["Ann", "Bob", None],
    }
)
PII_KEY = b"riverbed-test-key"


def hmac_sha256(key: bytes, message: exp.Expr) -> exp.Expr:
    """HMAC-SHA256 of ``message`` (a string) as hex, in SQL both engines run.

    The key's XOR with the pads is done here, so the SQL needs only SHA2, UNHEX, ENCODE and
    binary concatenation: H((K ^ opad) || H((K ^ ipad) || m)).
    """
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    inner_key = bytes(b ^ 0x36 for b in block).hex()
    outer_key = bytes(b ^ 0x5C for b in block).hex()
    encoded = exp.Encode(this=message, charset=exp.Literal.string("utf-8"))
    inner = exp.SHA2(
        this=exp.DPipe(this=exp.Unhex(this=exp.Literal.string(inner_key)), expression=encoded),
        length=exp.Literal.number(256),
    )
    return exp.SHA2(
        this=exp.DPipe(
            this=exp.Unhex(this=exp.Literal.string(outer_key)), expression=exp.Unhex(this=inner)
        ),
        length=exp.Literal.number(256),
    )


def select(*projections: str | exp.Expr, source: str = "orders") -> exp.Select:
    return exp.select(*projections, dialect=DIALECT).from_(source, dialect=DIALECT)


def sql(text: str) -> exp.Expression:
    statement = sqlglot.parse_one(text, dialect=DIALECT)
    assert isinstance(statement, exp.Expression)
    return statement


PORTABLE = [
    pytest.param(
        sql("SELECT id, amount + amount AS a2, amount - 1.5 AS a5, -amount AS neg FROM orders"),
        id="decimal-add-subtract",
    ),
    pytest.param(
        sql(
            "SELECT id, UPPER(TRIM(status)) AS s, LOWER(status) AS lo, TRIM(email) AS e FROM orders"
        ),
        id="upper-trim",
    ),
    pytest.param(
        sql(
            "SELECT id, CASE WHEN UPPER(TRIM(status)) = 'PAID' THEN 'paid' "
            "WHEN status IS NULL THEN 'unknown' ELSE 'other' END AS s, "
            "CASE WHEN qty > 2 THEN amount ELSE qty END AS mixed FROM orders"
        ),
        id="case",
    ),
    pytest.param(
        sql(
            "SELECT id, COALESCE(status, 'none') AS s, COALESCE(customer_id, -1) AS c, "
            "COALESCE(amount, 0) AS a, COALESCE(paid_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') "
            "AS t FROM orders"
        ),
        id="coalesce",
    ),
    pytest.param(
        sql(
            "SELECT id, TRY_CAST(placed_on AS DATE) AS d, TRY_CAST(qty_text AS INT) AS i, "
            "TRY_CAST(qty_text AS BIGINT) AS b, TRY_CAST(amount AS DECIMAL(4, 2)) AS small "
            "FROM orders"
        ),
        id="try-cast-date-int",
    ),
    pytest.param(
        select(
            "id",
            exp.alias_(
                exp.RegexpLike(
                    this=exp.column("status"), expression=exp.Literal.string(r"^\s*[Pp]")
                ),
                "starts_p",
            ),
            exp.alias_(
                exp.RegexpLike(
                    this=exp.column("email"), expression=exp.Literal.string("(?i)^ann@")
                ),
                "ann",
            ),
            "regexp_replace(status, '[aeiou]', '_', 'g') AS vowels",
            "regexp_extract(email, '([a-z]+)@([a-z.]+)', 2) AS domain",
        ),
        id="regexp",
    ),
    pytest.param(
        sql(
            "SELECT id, MIN(amount) OVER (PARTITION BY customer_id) AS mn, "
            "MAX(paid_at) OVER (PARTITION BY customer_id) AS mx, "
            "CAST(ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS BIGINT) "
            "AS rn, LAG(id) OVER (PARTITION BY customer_id ORDER BY id) AS prev "
            "FROM orders"
        ),
        id="window",
    ),
    pytest.param(
        sql(
            "SELECT customer_id, COUNT(*) AS n, COUNT(qty) AS nq, CAST(SUM(qty) AS BIGINT) AS sq, "
            "CAST(SUM(amount) AS DECIMAL(18, 2)) AS sa, AVG(qty) AS aq, "
            "CAST(AVG(amount) AS DECIMAL(18, 6)) AS aa, MIN(status) AS first_status, "
            "BOOL_OR(is_gift) AS any_gift, STRING_AGG(TRIM(status), ',' ORDER BY id) AS statuses, "
            "MAX_BY(id, amount) AS biggest, LIST_SORT(LIST(id)) AS ids "
            "FROM orders GROUP BY customer_id"
        ),
        id="group-by",
    ),
    pytest.param(
        sql(
            "SELECT c.customer_id, c.name, g.n, g.total FROM customers AS c LEFT JOIN ("
            "SELECT customer_id, COUNT(*) AS n, CAST(SUM(amount) AS DECIMAL(18, 2)) AS total "
            "FROM orders GROUP BY customer_id) AS g ON c.customer_id = g.customer_id"
        ),
        id="left-join-grouped",
    ),
    pytest.param(
        sql(
            "SELECT id, paid_at > TIMESTAMPTZ '2024-01-01 00:00:00+00' AS after, "
            "paid_at = TIMESTAMPTZ '2024-01-01 02:00:00+02' AS same_instant, "
            "paid_at < TIMESTAMP '2024-01-01 00:00:00' AS before_naive, "
            "paid_at BETWEEN TIMESTAMPTZ '2023-12-31 00:00:00+00' "
            "AND TIMESTAMPTZ '2024-01-01 00:00:00.000001+00' AS in_range FROM orders"
        ),
        id="timestamp-vs-literal",
    ),
    pytest.param(
        sql(
            "SELECT id, qty IS NULL AS qn, NULLIF(status, '') AS ne, is_gift AND TRUE AS a, "
            "NOT is_gift AS n, is_gift OR NULL AS o, status IS DISTINCT FROM 'PAID' AS d, "
            "customer_id NOT IN (10, 30) AS ni, customer_id / NULLIF(qty - qty, 0) AS safe_div "
            "FROM orders"
        ),
        id="null-handling",
    ),
    pytest.param(
        sql("SELECT id FROM orders ORDER BY status, id LIMIT 4"),
        id="order-by-nulls-last-limit",
    ),
    pytest.param(
        select(
            "id",
            exp.alias_(hmac_sha256(PII_KEY, exp.column("email")), "email_hmac"),
            "sha256(card) AS card_sha",
            "sha256(unhex(sha256(card)) || card) AS chained",
            "unhex(md5(coalesce(status, ''))) || coalesce(card, ''::BLOB) AS joined",
            "md5(email) AS m",
        ),
        id="sha256-hmac-binary",
    ),
    pytest.param(
        sql(
            "SELECT id, paid_at, local_at, ship_day, CAST(paid_at AS DATE) AS d, "
            "CAST(local_at AS TIMESTAMPTZ) AS lt, CAST(paid_at AS TIMESTAMP) AS naive, "
            "CAST(ship_day AS TIMESTAMP) AS day_start, DATE_TRUNC('day', paid_at) AS dd, "
            "CAST(DATE_TRUNC('month', local_at) AS TIMESTAMP) AS month_start, "
            "paid_at - INTERVAL 90 MINUTE AS earlier, ship_day + 1 AS next_day "
            "FROM orders"
        ),
        id="timestamp-casts",
    ),
    pytest.param(
        sql(
            "SELECT id, STRFTIME(paid_at, '%Y-%m-%d %H:%M:%S') AS f, "
            "STRFTIME(local_at, '%Y-%m-%d %H:%M:%S.%f') AS g, "
            "CAST(STRPTIME(placed_on, '%Y-%m-%d') AS TIMESTAMP) AS p FROM orders WHERE id = 1"
        ),
        id="strftime-strptime",
    ),
    pytest.param(
        sql(
            "SELECT id, CONCAT(status, '-', CAST(customer_id AS VARCHAR)) AS c1, "
            "status || '/' || CAST(id AS VARCHAR) AS c2, CONCAT_WS('|', status, email) AS c3, "
            "CAST(amount AS VARCHAR) AS a, CAST(qty AS VARCHAR) AS q FROM orders"
        ),
        id="concat-and-to-text",
    ),
    pytest.param(
        sql(
            "SELECT id, customer_id FROM orders "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY id DESC) = 1"
        ),
        id="qualify-named-columns",
    ),
    pytest.param(sql("SELECT * EXCLUDE (card, email) FROM orders"), id="select-star-exclude"),
    pytest.param(
        sql(
            "WITH last AS (SELECT customer_id, MAX(id) AS id FROM orders GROUP BY customer_id) "
            "SELECT o.id FROM orders AS o JOIN last ON o.id = last.id WHERE EXISTS ("
            "SELECT 1 FROM customers AS c WHERE c.customer_id = o.customer_id) "
            "UNION ALL SELECT customer_id FROM customers EXCEPT SELECT 40"
        ),
        id="cte-exists-union-except",
    ),
    pytest.param(
        sql(
            "SELECT id, CAST(ROUND(amount) AS BIGINT) AS r, ROUND(amount, 1) AS r1, "
            "ABS(amount) AS a, CAST(qty AS DOUBLE) / 4 AS quarter FROM orders"
        ),
        id="rounding-explicit",
    ),
]

SAME_VALUES = [
    pytest.param(
        sql(
            "SELECT id, qty + 1 AS q1, customer_id + qty AS s, id * qty AS m, qty % 3 AS r, "
            "qty // 3 AS d FROM orders"
        ),
        id="int-arithmetic",  # int16 op literal: int16 in DuckDB, int32 in Spark; DIV: int64
    ),
    pytest.param(
        sql(
            "SELECT id, amount * 2 AS a2, amount * qty AS aq, amount * 1.10 AS a3, "
            "FLOOR(amount) AS f, CEIL(amount) AS c, ROUND(amount) AS r FROM orders"
        ),
        id="decimal-precision",  # amount * 2: (18, 2) vs (14, 2); FLOOR: (12, 0) vs (11, 0)
    ),
    pytest.param(
        sql(
            "SELECT customer_id, SUM(qty) AS sq, SUM(id) AS si, SUM(amount) AS sa, "
            "SUM(CASE WHEN is_gift THEN 1 ELSE 0 END) AS gifts FROM orders GROUP BY customer_id"
        ),
        id="sum",  # DuckDB: int128 (decimal128(38, 0)) and decimal(38, s); Spark: int64, (p+10, s)
    ),
    pytest.param(
        sql(
            "SELECT id, ROW_NUMBER() OVER (ORDER BY status DESC, id) AS rn, "
            "RANK() OVER (ORDER BY customer_id) AS rk, "
            "DENSE_RANK() OVER (ORDER BY customer_id) AS drk FROM orders"
        ),
        id="ranking",  # int64 in DuckDB, int32 in Spark
    ),
    pytest.param(
        sql(
            "SELECT id, LENGTH(status) AS n, STRPOS(email, '@') AS at, "
            "EXTRACT(YEAR FROM paid_at) AS y, ARRAY_LENGTH(STRING_SPLIT(email, '@')) AS parts "
            "FROM orders"
        ),
        id="int-results-of-functions",  # int64 in DuckDB, int32 in Spark
    ),
]


def divergent(statement: str, reason: str, name: str) -> object:
    return pytest.param(
        sql(statement),
        id=name,
        marks=pytest.mark.xfail(
            strict=True, raises=(AssertionError, TransformEngineError), reason=reason
        ),
    )


DIVERGENT = [
    divergent(
        "SELECT id, customer_id / 0 AS z FROM orders",
        "x / 0 is NULL in DuckDB, DIVIDE_BY_ZERO in Spark (ANSI): use NULLIF(x, 0)",
        "divide-by-zero",
    ),
    divergent(
        "SELECT id, CAST(amount AS BIGINT) AS i FROM orders",
        "DuckDB rounds decimals/doubles cast to integers, Spark truncates: CAST(ROUND(x) ..)",
        "cast-decimal-to-int",
    ),
    divergent(
        "SELECT TRY_CAST('12.5' AS INT) AS i",
        "DuckDB casts '12.5' to 13, Spark to NULL",
        "try-cast-fraction-to-int",
    ),
    divergent(
        "SELECT id, CAST(paid_at AS VARCHAR) AS s FROM orders",
        "DuckDB appends '+00' to instants cast to text, Spark does not: use STRFTIME",
        "timestamptz-to-text",
    ),
    divergent(
        "SELECT id, DATE_TRUNC('month', local_at) AS m FROM orders",
        "Spark's DATE_TRUNC returns an instant even for a naive timestamp: CAST it",
        "date-trunc-naive",
    ),
    divergent(
        "SELECT id, STRPTIME(placed_on, '%Y-%m-%d') AS p FROM orders WHERE id = 1",
        "STRPTIME is naive in DuckDB, TO_TIMESTAMP an instant in Spark: CAST it",
        "strptime-type",
    ),
    divergent(
        "SELECT id, REGEXP_REPLACE(status, '[aeiou]', '_') AS r FROM orders",
        "DuckDB replaces the first match only, Spark all of them: pass 'g'",
        "regexp-replace-first",
    ),
    divergent(
        "SELECT id, REGEXP_MATCHES(status, 'PAID', 'i') AS m FROM orders",
        "sqlglot drops the options argument: write (?i) in the pattern",
        "regexp-options",
    ),
    divergent(
        "SELECT id, EPOCH(paid_at) AS e FROM orders",
        "DuckDB EPOCH is fractional seconds, Spark UNIX_TIMESTAMP whole seconds",
        "epoch",
    ),
    divergent(
        "SELECT id, EPOCH_MS(paid_at) AS e FROM orders",
        "sqlglot turns EPOCH_MS(timestamp) into TIMESTAMP_MILLIS: Spark rejects it",
        "epoch-ms",
    ),
    divergent(
        "SELECT id, CONCAT(status, '-', customer_id) AS c FROM orders",
        "sqlglot writes COALESCE(int, ''), which ANSI Spark cannot cast: CAST to VARCHAR",
        "concat-non-string",
    ),
    divergent(
        "SELECT * FROM orders "
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY id DESC) = 1",
        "QUALIFY with SELECT * leaks sqlglot's helper column _w: name the columns",
        "qualify-star",
    ),
    divergent(
        "SELECT customer_id, FIRST(id ORDER BY id) AS f FROM orders GROUP BY customer_id",
        "Spark cannot parse ORDER BY inside FIRST(): use MIN_BY/MAX_BY",
        "first-order-by",
    ),
    divergent(
        "SELECT LEN([1, 2]) AS n",
        "sqlglot writes LEN(list) as LENGTH, which Spark applies to strings only",
        "len-of-list",
    ),
    divergent(
        "SELECT id, STRFTIME(local_at, '%Y-%m-%dT%H:%M') AS f FROM orders",
        "sqlglot does not quote literal letters in Spark datetime patterns",
        "strftime-literal-letter",
    ),
    divergent(
        "SELECT id, ship_day + INTERVAL 2 DAY AS d FROM orders",
        "date + interval is a timestamp in DuckDB, a date in Spark: write ship_day + 2",
        "date-plus-interval",
    ),
    divergent(
        "SELECT id, DATE_ADD(ship_day, INTERVAL 2 DAY) AS d FROM orders",
        "Spark's DATE_ADD takes a day count, not an interval",
        "date-add-interval",
    ),
    divergent(
        "SELECT id, DATE_DIFF('month', ship_day, DATE '2024-03-01') AS m FROM orders",
        "DuckDB counts month boundaries crossed, Spark whole months",
        "date-diff-month",
    ),
    divergent(
        "SELECT id, CAST(local_at AS TIME) AS t FROM orders",
        "sqlglot writes TIME as Spark's TIMESTAMP: the cast keeps the date",
        "cast-to-time",
    ),
    divergent(
        "SELECT UPPER('straße') AS u",
        "Unicode special casing: DuckDB gives STRAẞE, Spark STRASSE",
        "upper-eszett",
    ),
    divergent(
        "SELECT id, HASH(status) AS h FROM orders",
        "different hash functions (uint64 vs int32): use md5/sha256",
        "hash",
    ),
    divergent(
        "SELECT id, AVG(amount) AS a FROM orders GROUP BY id",
        "AVG(decimal) is double in DuckDB, decimal(p+4, s+4) in Spark: CAST it",
        "avg-decimal",
    ),
    divergent(
        "SELECT id, amount * amount AS sq FROM orders",
        "DuckDB multiplies decimal(12,2)s in 18 digits and overflows; Spark has 25",
        "decimal-overflow",
    ),
    divergent(
        "SELECT id, qty * 200 AS q FROM orders",
        "DuckDB keeps int16 for int16 * literal and overflows; Spark computes in int32",
        "int16-overflow",
    ),
]

BOTH_REJECT = [
    pytest.param(sql("SELECT id, CAST(qty_text AS INT) AS i FROM orders"), id="bad-cast"),
    pytest.param(sql("SELECT id, qty * qty * qty * qty AS q FROM orders"), id="int-overflow"),
    pytest.param(sql("SELECT CAST(amount AS DECIMAL(4, 2)) AS a FROM orders"), id="decimal-range"),
]


def rows_sorted(table: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_nested(f.type)]
    return table.sort_by(keys) if keys and table.num_rows else table


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[SparkEngine]:
    """The one Spark engine of the test session (its session takes ~10 s to start).

    The default master, as ``transform.spark_master`` has: other tests' engines share it.
    """
    engine = SparkEngine()
    yield engine
    engine.close()
    stop_session()


@pytest.fixture(scope="module")
def engines(spark_engine: SparkEngine) -> Iterator[tuple[DuckDBEngine, SparkEngine]]:
    duck = DuckDBEngine()
    for engine in (duck, spark_engine):
        engine.register("orders", ORDERS)
        engine.register("customers", CUSTOMERS)
    yield duck, spark_engine
    duck.close()


def both(
    engines: tuple[DuckDBEngine, SparkEngine], statement: exp.Expression
) -> tuple[pa.Table, pa.Table]:
    duck, spark = engines
    return rows_sorted(duck.query(statement)), rows_sorted(spark.query(statement))


@pytest.mark.parametrize("statement", PORTABLE + DIVERGENT)
def test_same_statement_same_arrow(
    engines: tuple[DuckDBEngine, SparkEngine], statement: exp.Expression
) -> None:
    expected, got = both(engines, statement)
    assert got.schema == expected.schema, (
        f"{statement.sql(DIALECT)}\n{expected.schema}\n{got.schema}"
    )
    assert got.equals(expected), (
        f"{statement.sql(DIALECT)}\nduckdb: {expected.to_pylist()}\nspark:  {got.to_pylist()}"
    )


@pytest.mark.parametrize("statement", SAME_VALUES)
def test_same_values_other_types(
    engines: tuple[DuckDBEngine, SparkEngine], statement: exp.Expression
) -> None:
    expected, got = both(engines, statement)
    assert got.schema != expected.schema, "types agree now: move this statement to PORTABLE"
    assert comparable(got).equals(comparable(expected)), (
        f"duckdb: {expected.to_pylist()}\nspark:  {got.to_pylist()}"
    )


@pytest.mark.parametrize("statement", BOTH_REJECT)
def test_both_engines_reject_overflow_and_bad_casts(
    engines: tuple[DuckDBEngine, SparkEngine], statement: exp.Expression
) -> None:
    # ANSI mode: without it Spark would wrap the overflow or return NULL for the bad value
    for engine in engines:
        with pytest.raises(TransformEngineError) as caught:
            engine.query(statement)
        assert not caught.value.transient


def test_hmac_in_sql_is_the_real_hmac(engines: tuple[DuckDBEngine, SparkEngine]) -> None:
    statement = select("email", exp.alias_(hmac_sha256(PII_KEY, exp.column("email")), "mac"))
    for engine in engines:
        for row in engine.query(statement).to_pylist():
            if row["email"] is None:
                assert row["mac"] is None
            else:
                expected = hmac.new(PII_KEY, row["email"].encode(), hashlib.sha256).hexdigest()
                assert row["mac"] == expected


def test_register_files_reads_what_pyarrow_wrote(
    engines: tuple[DuckDBEngine, SparkEngine], tmp_path: Path
) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "kind": ["a", None, "a"],  # dictionary-encoded in the file, as the lake writes it
            "amount": pa.array([Decimal("1.25"), None, Decimal("-0.50")], pa.decimal128(12, 2)),
            # before 1582 and 1900: Spark reads them unshifted only with the CORRECTED rebase
            "at": pa.array(
                [
                    datetime(1000, 1, 1, tzinfo=UTC),
                    None,
                    datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "local": pa.array(
                [datetime(1, 1, 1), datetime(1899, 12, 31, 23, 59), None], pa.timestamp("us")
            ),
            "day": pa.array([date(1, 1, 1), date(1582, 10, 4), None]),
            "clock": pa.array([time(1, 2, 3, 4), None, time(23, 59)], pa.time64("us")),
            "tags": pa.array([["x"], [], None], pa.list_(pa.string())),
        }
    )
    paths = []
    for index, part in enumerate((table.slice(0, 2), table.slice(2))):
        path = tmp_path / f"part-{index}.parquet"
        pq.write_table(part, path, **writer_options(part.schema))
        paths.append(str(path))
    statement = sql("SELECT * FROM files")
    results = []
    for engine in engines:
        engine.register_files("files", paths, table.schema)
        results.append(rows_sorted(engine.query(statement)))
        engine.register_files("files", [], table.schema)
        assert engine.query(statement).num_rows == 0
    duck, spark = results
    assert spark.equals(duck), f"duckdb: {duck.to_pylist()}\nspark:  {spark.to_pylist()}"
    assert spark.column("at").to_pylist() == table.column("at").to_pylist()
    assert spark.column("day").to_pylist() == table.column("day").to_pylist()


def test_register_files_reads_encrypted_files(
    engines: tuple[DuckDBEngine, SparkEngine], tmp_path: Path
) -> None:
    """With lake.encryption on, both engines read the files through pyarrow's decryption."""
    lake = LakeConfig.model_validate({"path": "lake", "encryption": {"enabled": True}})
    storage = open_storage(lake, tmp_path)
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "email": ["a@b.test", None]})
    write_table(storage, "raw/c/a.parquet", table)
    path = str(tmp_path / "lake" / "raw/c/a.parquet")
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(path)
    for engine in engines:
        engine.register_files("secret", [path], table.schema, storage.crypto)
        got = engine.query(sql("SELECT id, email FROM secret"))
        assert rows_sorted(got).to_pylist() == table.to_pylist(), engine.name


def test_register_replaces_and_reads_arrow_types(spark_engine: SparkEngine) -> None:
    spark_engine.register("t", pa.table({"x": [1]}))
    spark_engine.register("t", pa.table({"x": pa.array(["b", "a"]).dictionary_encode()}))
    got = spark_engine.query(sql("SELECT x FROM t ORDER BY x"))
    assert got.schema == pa.schema([pa.field("x", pa.string())])
    assert got.column("x").to_pylist() == ["a", "b"]


def test_conform_gives_duckdb_arrow_types() -> None:
    spark_like = pa.schema(
        [
            pa.field("n", pa.int64(), nullable=False),  # COUNT(*) is NOT NULL in Spark
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("clock", pa.time64("ns")),
            pa.field("tags", pa.list_(pa.field("element", pa.string()))),
        ]
    )
    conformed = conform(spark_like.empty_table()).schema
    assert conformed == pa.schema(
        [
            pa.field("n", pa.int64()),
            pa.field("at", pa.timestamp("us", tz="UTC")),
            pa.field("clock", pa.time64("us")),
            pa.field("tags", pa.list_(pa.field("l", pa.string()))),
        ]
    )


def test_errors_are_translated_once(engines: tuple[DuckDBEngine, SparkEngine]) -> None:
    _, spark = engines
    with pytest.raises(TransformEngineError) as unknown:
        spark.query(sql("SELECT nope FROM orders"))
    first = str(unknown.value).splitlines()[0]
    assert first.startswith("spark: [UNRESOLVED_COLUMN"), first
    assert "`nope`" in first
    assert not unknown.value.transient

    with pytest.raises(TransformEngineError, match="orders_wide.amount is decimal256"):
        spark.register("orders_wide", pa.table({"amount": pa.array([1], pa.decimal256(40, 2))}))


def test_a_vanished_file_is_transient(spark_engine: SparkEngine, tmp_path: Path) -> None:
    path = tmp_path / "gone.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    spark_engine.register_files("gone", [str(path)], pa.schema([("x", pa.int64())]))
    path.unlink()
    with pytest.raises(TransformEngineError) as caught:
        spark_engine.query(sql("SELECT * FROM gone"))
    assert caught.value.transient
    assert "FileNotFoundException" in str(caught.value).splitlines()[0]


def test_engines_share_the_session_not_their_views(spark_engine: SparkEngine) -> None:
    other = SparkEngine(conf={"spark.sql.shuffle.partitions": "2"})
    other.register("only_here", pa.table({"x": [1]}))
    with pytest.raises(TransformEngineError, match="only_here"):
        spark_engine.query(sql("SELECT * FROM only_here"))
    other.close()
    assert spark_engine.query(sql("SELECT 1 AS one")).to_pylist() == [{"one": 1}]
    with pytest.raises(TransformEngineError, match=r"master 'local\[\*\]', not 'local\[1\]'"):
        SparkEngine(master="local[1]")
    with pytest.raises(TransformEngineError, match="spark.driver.memory='3g' can only be set"):
        SparkEngine(conf={"spark.driver.memory": "3g"})


def test_the_value_and_expression_rules_flag_the_same_rows_on_both_engines(
    engines: tuple[DuckDBEngine, SparkEngine],
) -> None:
    """not_accepted_values, not_equal, range with exclusive bounds and expression (NULL
    fails) compile to one statement that both engines answer alike, reasons included."""
    from riverbed.config.tables import QualityRule
    from riverbed.transform.rules import compile_checks
    from riverbed.transform.rules.context import RuleContext

    batch = pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "status": ["paid", "void", None, "open", "void", "paid"],
            "qty": pa.array([0, 1, 10, None, 5, 0], pa.int32()),
            "weight": [0.5, 0.75, 2.0, None, 1.0, 0.5],
            "_op": ["I", "U", "I", "I", "D", "I"],
            "_lsn": pa.array([100, 101, 102, 103, 104, 105], pa.int64()),
            "_seq": pa.array([0, 1, 2, 3, 4, 5], pa.int64()),
        }
    )
    rules = [
        QualityRule.model_validate(settings)
        for settings in (
            {"type": "not_accepted_values", "column": "status", "values": ["void", "lost"]},
            {"type": "not_equal", "column": "qty", "value": 0},
            {"type": "not_equal", "column": "status", "value": "open"},
            {
                "type": "range",
                "column": "qty",
                "min": 0,
                "max": 10,
                "exclusive_min": True,
                "exclusive_max": True,
            },
            {"type": "range", "column": "weight", "min": 0.5, "exclusive_min": True},
            {"type": "expression", "sql": "qty * weight >= 1 AND status <> 'void'"},
        )
    ]
    ctx = RuleContext(
        "batch_rules", ["id"], batch.column_names, datetime(2024, 5, 1, tzinfo=UTC), None, {}, []
    )
    checks = compile_checks("batch_rules", rules, ctx)
    for engine in engines:
        engine.register("batch_rules", batch)
    duck, spark = (engine.query(checks.flagged).sort_by("_seq") for engine in engines)
    flags = [f"{kind}_{i}" for i in range(len(rules)) for kind in ("_fail", "_reason")]
    assert spark.select(flags).to_pylist() == duck.select(flags).to_pylist()
    failing = {
        i: [row for row, failed in enumerate(duck.column(f"_fail_{i}").to_pylist()) if failed]
        for i in range(len(rules))
    }
    # rows: 0 paid/0/0.5, 1 void/1/0.75, 2 NULL/10/2.0, 3 open/NULL/NULL, 4 a delete, 5 paid/0
    assert failing == {0: [1], 1: [0, 5], 2: [3], 3: [0, 2, 5], 4: [0, 5], 5: [0, 1, 2, 3, 5]}
