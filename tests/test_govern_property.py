"""The gateway's answer equals a plain reference: for random small policies (a column subset,
a row filter, masks) and random queries from a small grammar, the rows a principal gets
through the gateway, on DuckDB and on PostgreSQL, are the rows the same query returns,
ungoverned, over the table filtered and masked beforehand in Python."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riverbed.config.governance import (
    ColumnsConfig,
    GovernanceConfig,
    GrantConfig,
    PrincipalConfig,
    RoleConfig,
)
from riverbed.config.models import RiverbedConfig
from riverbed.govern.gateway import Catalog, govern
from riverbed.govern.masks import key_statements
from riverbed.govern.policy import Policy
from riverbed.source.embedded import EmbeddedServer

KEY = b"property-key"
TYPES = {
    "id": "INTEGER",
    "name": "VARCHAR",
    "email": "VARCHAR",
    "region": "VARCHAR",
    "amount": "INTEGER",
    "day": "DATE",
}
ROWS: list[dict[str, Any]] = [
    {
        "id": i,
        "name": None if i % 7 == 3 else f"Person {i % 5}",
        "email": None if i % 6 == 5 else f"p{i % 4}@{'eu' if i % 2 else 'us'}.example",
        "region": ["EU", "US", "APAC", None][i % 4],
        "amount": None if i % 9 == 8 else (i * 37) % 50,
        "day": None if i % 8 == 7 else datetime.date(2020 + i % 3, 1 + i % 12, 1 + i % 27),
    }
    for i in range(24)
]
MASKS = {
    "VARCHAR": ["redact", "show_last_4", "show_first_4", "null", "email_domain", "hash"],
    "INTEGER": ["redact", "show_last_4", "null", "hash"],
    "DATE": ["year_only", "null"],
}
FILTERS = {  # row filter: (SQL, the same in Python over a row and the principal's region)
    "none": (None, lambda _row, _region: True),
    "region": ("region = principal.region", lambda row, region: row["region"] == region),
    "amount": ("amount > 20", lambda row, _region: (row["amount"] or 0) > 20),
}


def masked(value: Any, mask: str) -> Any:
    """The mask in plain Python, as the reference applies it."""
    if mask == "null" or value is None:
        return None
    text = str(value)
    return {
        "redact": lambda: "***",
        "show_last_4": lambda: "***" + text[-4:],
        "show_first_4": lambda: text[:4] + "***",
        "email_domain": lambda: "***@" + (text.split("@")[1] if "@" in text else ""),
        "hash": lambda: hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest(),
        "year_only": lambda: datetime.date(value.year, 1, 1),
    }[mask]()


@st.composite
def policies(draw: st.DrawFn) -> tuple[list[str], dict[str, str], str, str]:
    """Granted columns (in table order), masks on some of them, a row filter, a region."""
    columns = draw(st.lists(st.sampled_from(list(TYPES)), min_size=1, unique=True))
    granted = [c for c in TYPES if c in columns]
    masks = {c: draw(st.sampled_from(MASKS[TYPES[c]])) for c in granted if draw(st.booleans())}
    return granted, masks, draw(st.sampled_from(list(FILTERS))), draw(st.sampled_from(["EU", "US"]))


@st.composite
def queries(draw: st.DrawFn, granted: list[str]) -> str:
    """SELECT [DISTINCT] columns or * FROM t [WHERE a predicate on a granted column], or a
    count grouped by one granted column."""
    where = ""
    if draw(st.booleans()):
        column = draw(st.sampled_from(granted))
        predicate = draw(st.sampled_from(["is_null", "not_null", "equals"]))
        if predicate == "equals":
            value = draw(st.sampled_from([r[column] for r in ROWS if r[column] is not None]))
            literal = f"DATE '{value}'" if TYPES[column] == "DATE" else repr(value)
            # a masked column compares as its masked values, as text where the mask made text
            where = f" WHERE CAST({column} AS VARCHAR) = CAST({literal} AS VARCHAR)"
        else:
            where = f" WHERE {column} IS {'NOT ' if predicate == 'not_null' else ''}NULL"
    shape = draw(st.sampled_from(["star", "columns", "grouped"]))
    if shape == "grouped":
        column = draw(st.sampled_from(granted))
        return f"SELECT {column}, count(*) AS n FROM t{where} GROUP BY {column}"
    if shape == "star":
        return f"SELECT * FROM t{where}"
    picked = draw(st.lists(st.sampled_from(granted), min_size=1, unique=True))
    distinct = "DISTINCT " if draw(st.booleans()) else ""
    return f"SELECT {distinct}{', '.join(picked)} FROM t{where}"


def table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    return pa.table({c: [r[c] for r in rows] for c in columns})


# the column types as each warehouse's catalog names them
CATALOG_TYPES = {
    "duckdb": TYPES,
    "postgres": {"INTEGER": "integer", "VARCHAR": "character varying", "DATE": "date"},
}


@pytest.fixture(scope="module")
def warehouses(pg_server: EmbeddedServer) -> Iterator[dict[str, Callable[[str], list[str]]]]:
    """Table t with ROWS on each warehouse, the PII key's pads in its session: a function per
    warehouse that runs SQL there and returns its rows, comparable."""
    columns = ", ".join(f"{name} {kind}" for name, kind in TYPES.items())
    duck = duckdb.connect()
    duck.execute(f"CREATE TABLE t ({columns})")
    source = table(ROWS, list(TYPES))  # noqa: F841 - read by DuckDB below, by name
    duck.execute("INSERT INTO t SELECT * FROM source")
    for statement in key_statements(KEY, "duckdb"):
        duck.execute(statement)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE property_wh")
    pg = psycopg.connect(pg_server.dsn("property_wh"), autocommit=True)
    pg.execute(f"CREATE TABLE t ({columns})")
    with pg.cursor() as cur:
        cur.executemany(
            f"INSERT INTO t VALUES ({', '.join(['%s'] * len(TYPES))})",
            [tuple(row[c] for c in TYPES) for row in ROWS],
        )
    for statement in key_statements(KEY, "postgres"):
        pg.execute(statement)
    yield {
        "duckdb": lambda sql: sorted(map(repr, duck.execute(sql).fetchall())),
        "postgres": lambda sql: sorted(map(repr, pg.execute(sql).fetchall())),
    }
    pg.close()
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE property_wh WITH (FORCE)")


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_the_gateway_equals_filtering_and_masking_first(
    dialect: str, warehouses: dict[str, Callable[[str], list[str]]], data: st.DataObject
) -> None:
    granted, masks, filtered, region = data.draw(policies())
    sql = data.draw(queries(granted))
    row_filter, keeps = FILTERS[filtered]
    grant = GrantConfig(
        tables=["t"],
        columns=ColumnsConfig(include=granted),
        row_filter=row_filter,
        masks=masks,  # type: ignore[arg-type]  # mask names, as the YAML gives them
    )
    config = RiverbedConfig(
        governance=GovernanceConfig(
            roles={"r": RoleConfig(grants=[grant])},
            principals={"p": PrincipalConfig(roles=["r"], attributes={"region": region})},
        )
    )
    policy = Policy.from_config(config)
    types = {name: CATALOG_TYPES[dialect].get(kind, kind) for name, kind in TYPES.items()}
    schema = "main" if dialect == "duckdb" else "public"
    catalog = Catalog(dialect, "wh", schema, {"t": types})
    governed = govern(policy, policy.principal("p"), sql, catalog)
    assert governed.allowed, governed.reason

    reference = duckdb.connect()
    prepared = [
        {c: masked(r[c], masks[c]) if c in masks else r[c] for c in granted}
        for r in ROWS
        if keeps(r, region)
    ]
    shaped = table(prepared, granted)
    for name in granted:  # a column the reference made all NULL keeps a type to compare as
        if pa.types.is_null(shaped.schema.field(name).type):
            kind = "VARCHAR" if masks.get(name) in MASKS["VARCHAR"][:3] else TYPES[name]
            shaped = shaped.set_column(
                shaped.schema.get_field_index(name),
                name,
                pa.array([None] * len(prepared), _arrow(kind)),
            )
    reference.register("t", shaped)
    expected = sorted(map(repr, reference.execute(sql).fetchall()))
    assert warehouses[dialect](governed.sql) == expected, (sql, masks, filtered)


def _arrow(kind: str) -> pa.DataType:
    return {"VARCHAR": pa.string(), "INTEGER": pa.int64(), "DATE": pa.date32()}[kind]
