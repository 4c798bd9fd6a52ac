"""The gateway: one function, ``govern``, between a principal's SQL and the warehouse.

It parses the SQL with sqlglot in the warehouse's dialect and answers with a ``Governed``: the
SQL to run instead, or the reason it may not run. Allowed is exactly one query (SELECT, WITH,
UNION / INTERSECT / EXCEPT) that:

- does nothing but read: no DML or DDL anywhere in it (a data-modifying CTE included), no
  ``SELECT ... INTO``, ``FOR UPDATE``, ``COPY``, ``ATTACH``, ``SET``, ``PRAGMA`` ...;
- calls no function that reaches past the governed tables: file and URL readers
  (``read_csv``, ``glob``, ``read_text`` ...), catalog and settings functions
  (``duckdb_settings()``, ``current_setting``, ``getenv``, ``getvariable``), server file and
  large-object functions (``pg_*``, ``lo_*``), SQL run from a string (``query()``,
  ``query_to_xml``, ``dblink``) -- ``DENIED_FUNCTIONS`` and its prefixes and suffixes; the only
  table functions are the generators ``range``, ``generate_series`` and ``unnest``;
- reads only tables of the warehouse's own schema. Each table reference (in joins,
  subqueries, CTE bodies, set operations; quoted or not, qualified or not, any case) that is
  not a CTE in scope is replaced by a governed derived table::

      (SELECT "id", '***@' || SPLIT_PART("email", '@', 2) AS "email"
       FROM "main"."dim_customer" WHERE region = 'EU') AS dim_customer

  with only the granted columns, the masks applied (riverbed.govern.masks) and the row filter,
  its ``principal.<attribute>`` bound as literals in the syntax tree (on PostgreSQL with
  ``OFFSET 0``, so no predicate of the query runs on a row before the filter, see _FENCED). ``SELECT *`` yields the
  granted columns; a column left out is missing for the engine, which says so. A table the
  principal is not granted gets the message of one that does not exist: default deny does not
  tell what exists. System catalogs (information_schema, pg_catalog, duckdb_*, sqlite_master)
  are refused by name; ``riverbed_tables`` (table_name, column_name) lists what the principal
  may read.

A masked column holds masked values only, inside the query: WHERE, GROUP BY, ORDER BY and
joins compare masked values, so a query cannot filter on a clear value it cannot read.

``derived_table`` gives a principal's derived table of one table and its security context (a
digest of its SQL); ``govern(..., copies)`` reads, in place of a derived table, a SELECT the
caller vouches gives the same rows: riverbed.serve.copies's governed copy of that context,
exactly fresh. The copies live outside the warehouse's own schema, so ``_resolve`` refuses a
query naming them like any table that does not exist.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from riverbed.govern.masks import mask_expression
from riverbed.govern.policy import GovernError, Policy, Principal, TableAccess, bind_attributes

LISTING = "riverbed_tables"  # the governed listing of what a principal may read
# statements and clauses that do more than read, anywhere in the tree
_NOT_READING: dict[type[exp.Expr], str] = {
    exp.DML: "change data",
    exp.DDL: "change the schema",
    exp.Command: "run commands",
    exp.Copy: "COPY",
    exp.Set: "SET",
    exp.Pragma: "PRAGMA",
    exp.Attach: "ATTACH",
    exp.Detach: "DETACH",
    exp.Use: "USE",
    exp.Install: "INSTALL or LOAD",
    exp.Export: "EXPORT",
    exp.Describe: "DESCRIBE",
    exp.Show: "SHOW",
    exp.Transaction: "open transactions",
    exp.Commit: "COMMIT",
    exp.Rollback: "ROLLBACK",
    exp.Kill: "KILL",
    exp.LoadData: "LOAD DATA",
    exp.Lock: "lock rows (FOR UPDATE / FOR SHARE)",
    exp.Into: "SELECT ... INTO (it creates a table)",
    exp.Summarize: "SUMMARIZE",
    exp.Analyze: "ANALYZE",
    exp.Refresh: "REFRESH",
    exp.Cache: "CACHE",
    exp.Uncache: "UNCACHE",
}
_NOT_READING_KINDS = tuple(_NOT_READING)
_CHANGE_HINT = "the warehouse changes through the pipeline (`riverbed run`) only"
# functions sqlglot knows by class that read outside the governed tables
_DENIED_CLASSES: tuple[type[exp.Expr], ...] = (
    exp.ReadCSV,
    exp.ReadParquet,
    exp.Secret,
    exp.ToFile,
    exp.NextValueFor,
    exp.XMLTable,
    exp.CurrentStatement,
)
DENIED_FUNCTIONS = frozenset(
    {
        "getenv", "current_setting", "set_config", "getvariable", "query", "query_table",
        "glob", "which_secret", "sql_auto_complete", "ts_stat", "ts_rewrite", "nextval",
        "setval", "currval", "lastval", "current_query", "load_extension", "enable_logging",
        "sniff_csv", "checkpoint", "force_checkpoint", "iceberg_metadata", "row_security_active",
        "format_type", "obj_description", "col_description", "shobj_description",
    }
)  # fmt: skip
_DENIED_PREFIXES = (
    "duckdb_", "pg_", "lo_", "dblink", "pragma_", "read_", "parquet_", "sqlite_", "postgres_",
    "mysql_", "iceberg_", "delta_", "has_", "to_reg", "txid_", "inet_", "json_execute",
    "http_", "s3_", "current_setting", "file_",
)  # fmt: skip
_DENIED_SUFFIXES = ("_to_xml", "_to_xmlschema", "_to_xml_and_xmlschema", "_scan", "_description")
# harmless despite a denied prefix: a sleep the query's time limit stops, a value's type
_ALLOWED_FUNCTIONS = frozenset({"pg_sleep", "pg_typeof"})
# table functions that only generate rows
_GENERATORS: tuple[type[exp.Expr], ...] = (exp.GenerateSeries, exp.Unnest)
_GENERATOR_NAMES = frozenset({"range", "generate_series", "unnest", "generate_subscripts"})
# dialects whose planner may run a query's own predicates before the row filter of a table it
# reads, once it flattens the derived table into the query: on PostgreSQL, a cheaper predicate
# goes first, and a cast failing on a withheld row names its value in the error. OFFSET 0
# keeps the derived table whole (the planner neither pulls it up nor pushes predicates into
# it), as a security_barrier view would. DuckDB filters the derived table first (tested).
_FENCED = frozenset({"postgres"})
# what a table reference may carry besides its name: the governed table keeps its alias and
# pivots; ONLY (no inheritance children) has no children to leave out in a warehouse
_TABLE_PARTS = frozenset({"this", "db", "catalog", "alias", "pivots", "only"})
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast", "system", "temp"})
_SYSTEM_PREFIXES = ("duckdb_", "pg_", "sqlite_", "pragma_", "information_schema")
_SYSTEM_HINT = (
    "system catalogs are not readable through the gateway; "
    f"SELECT * FROM {LISTING} lists the tables and columns you may read"
)


@dataclass(frozen=True)
class Catalog:
    """The warehouse as the gateway resolves names against it: its SQL dialect, the
    database and schema queries run in, and the tables there with their columns (name: type,
    in order)."""

    dialect: str
    database: str
    schema: str
    tables: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Governed:
    """The gateway's decision on one query: ``allowed``, the ``sql`` to run (in the
    warehouse's dialect) and the warehouse ``tables`` it reads; or not allowed and the
    ``reason``. ``hashes``: the SQL applies the hash mask, whose key the session needs
    (riverbed.govern.masks.key_statements)."""

    allowed: bool
    sql: str
    tables: tuple[str, ...]
    reason: str = ""
    hashes: bool = False


# per policy: (principal, attributes, table, dialect, schema, columns) -> the governed
# SELECT's SQL and whether it hashes, or None when the table is not granted
_DERIVED: weakref.WeakKeyDictionary[Policy, dict[tuple[Any, ...], tuple[str, bool] | None]] = (
    weakref.WeakKeyDictionary()
)


class Refused(GovernError):
    """A query the gateway does not let through."""


@dataclass(frozen=True)
class Derived:
    """The governed derived table of one table for one principal: its SELECT's ``sql`` (the
    granted columns, the masks, the row filter with the principal's attributes bound),
    whether it ``hashes`` (its session needs the PII key) and whether it is ``plain`` (every
    column in clear, every row: the table itself). Principals whose derived tables are the
    same SQL share a security ``context``: a short digest of that SQL, which holds no key
    (the hash mask reads it from the session)."""

    table: str
    sql: str
    hashes: bool
    plain: bool

    @property
    def context(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:12]


def derived_table(
    policy: Policy, principal: Principal, table: str, catalog: Catalog
) -> Derived | None:
    """The derived table ``govern`` puts in place of ``table`` for ``principal``; None when
    the table is not granted."""
    found = _Rewriter(policy, principal, catalog)._derived(table)
    if found is None:
        return None
    access = policy.access(principal, table, list(catalog.tables[table]))
    assert access is not None  # granted: _derived found it
    plain = (
        access.row_filter is None
        and not access.masks
        and list(access.columns) == list(catalog.tables[table])
    )
    return Derived(table, found[0], found[1], plain)


def govern(
    policy: Policy,
    principal: Principal,
    sql: str,
    catalog: Catalog,
    copies: Mapping[str, str] | None = None,
) -> Governed:
    """Check ``sql`` for ``principal`` and rewrite it to read governed tables only.
    ``copies``: table -> a SELECT to read in place of the table's derived table, one that
    gives the same rows (riverbed.serve.copies: the principal's governed copy, fresh)."""
    try:
        root = _one_query(sql, catalog.dialect)
        _check_nodes(root)
        rewriter = _Rewriter(policy, principal, catalog, copies or {})
        rewritten = rewriter.rewrite(root)
        return Governed(
            True, rewritten.sql(dialect=catalog.dialect), tuple(rewriter.read), "", rewriter.hashes
        )
    except Refused as refused:
        return Governed(False, "", (), str(refused))


def _one_query(sql: str, dialect: str) -> exp.Expr:
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        reason = " ".join(str(exc).split("\n")[0].split())
        raise Refused(f"the query cannot be read as {dialect} SQL: {reason}") from None
    if len(statements) != 1:
        raise Refused(
            f"the query holds {len(statements)} statements, not one; "
            "run one query (SELECT, WITH or a UNION of them) at a time"
        )
    root = statements[0]
    while isinstance(root, exp.Subquery) and isinstance(root.this, exp.Query):
        root = root.this
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)  # it parsed: it tokenizes
        kind = tokens[0].text.upper() if tokens else root.key.upper()
        raise Refused(
            f"only a query may run (SELECT, WITH, UNION / INTERSECT / EXCEPT), not {kind}; "
            f"{_CHANGE_HINT}"
        )
    return statements[0]


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for SQL it keeps as a raw command (``LOAD x``), which the
    gateway refuses with its own message: one line, not two."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_nodes(root: exp.Expr) -> None:
    for node in root.walk():
        if isinstance(node, _NOT_READING_KINDS):
            what = next(w for kind, w in _NOT_READING.items() if isinstance(node, kind))
            raise Refused(f"a query may not {what}; only reading is allowed: {_CHANGE_HINT}")
        if isinstance(node, (exp.Cast, exp.TryCast)) and node.to.sql().lower().startswith("reg"):
            raise Refused(f"casts to {node.to.sql()} read the system catalog; {_SYSTEM_HINT}")
        if isinstance(node, exp.Func):
            _check_function(node)


def _check_function(node: exp.Func) -> None:
    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
    lowered = name.lower()
    denied = isinstance(node, _DENIED_CLASSES) or (
        lowered not in _ALLOWED_FUNCTIONS
        and (
            lowered in DENIED_FUNCTIONS
            or lowered.startswith(_DENIED_PREFIXES)
            or lowered.endswith(_DENIED_SUFFIXES)
        )
    )
    if denied:
        raise Refused(
            f"function {lowered} is not allowed: it reads files, settings, catalogs or "
            "other sources the policy does not govern"
        )


class _Rewriter:
    """Replaces each table reference of one query by its governed derived table."""

    def __init__(
        self,
        policy: Policy,
        principal: Principal,
        catalog: Catalog,
        copies: Mapping[str, str] | None = None,
    ):
        self.policy = policy
        self.copies = copies or {}
        self.principal = principal
        self.catalog = catalog
        self.dialect = catalog.dialect
        self.read: list[str] = []  # warehouse tables read, each once
        self.hashes = False
        # names as the engine folds them: DuckDB ignores case even quoted, PostgreSQL folds
        # unquoted names to lower case
        self._folded = {name.lower(): name for name in catalog.tables}

    def rewrite(self, root: exp.Expr) -> exp.Expr:
        for table in list(root.find_all(exp.Table)):
            if not isinstance(table.this, exp.Identifier):
                self._check_table_function(table)
            elif not _is_cte_reference(table):
                table.replace(self._governed(table))
        return root

    def _check_table_function(self, table: exp.Table) -> None:
        function = table.this
        name = function.name if isinstance(function, exp.Anonymous) else ""
        if not isinstance(function, _GENERATORS) and name.lower() not in _GENERATOR_NAMES:
            shown = name or (function.sql_name() if isinstance(function, exp.Func) else "")
            raise Refused(
                f"table function {shown.lower() or function.sql()} is not allowed: only "
                "tables, and the generators range, generate_series and unnest, may be read"
            )

    def _governed(self, table: exp.Table) -> exp.Expr:
        written = ".".join(part.name for part in table.parts)
        alias = table.args.get("alias") or exp.TableAlias(
            this=exp.to_identifier(table.name, quoted=table.this.quoted)
        )
        extra = [k for k, v in table.args.items() if v and k not in _TABLE_PARTS]
        if extra:
            raise Refused(
                f"table {written}: {extra[0].upper()} on a table is not supported through the "
                "gateway; query the table plainly (e.g. ORDER BY random() LIMIT n for a sample)"
            )
        name = self._resolve(table, written)
        if name is None:
            return self._listing(alias)
        derived_sql = self._derived_sql(name)
        if derived_sql is None:
            raise Refused(f"table {written} does not exist")
        if name not in self.read:
            self.read.append(name)
        # the derived table's SQL, generated from its tree once per principal and table
        derived_sql = self.copies.get(name, derived_sql)
        derived = exp.Subquery(this=exp.Var(this=derived_sql), alias=alias)
        if table.args.get("pivots"):
            derived.set("pivots", table.args["pivots"])
        return derived

    def _derived_sql(self, name: str) -> str | None:
        """The governed SELECT of table ``name`` as SQL text; None when not granted."""
        found = self._derived(name)
        if found is None:
            return None
        self.hashes = self.hashes or found[1]
        return found[0]

    def _derived(self, name: str) -> tuple[str, bool] | None:
        """The governed SELECT of table ``name`` as SQL text and whether it hashes; None when
        not granted. Kept per policy (a server holds one policy for many queries), keyed by
        all it depends on."""
        types = self.catalog.tables[name]
        key = (
            self.principal.name,
            tuple(sorted(self.principal.attributes.items())),
            name,
            self.dialect,
            self.catalog.schema,
            tuple(types.items()),
        )
        known = _DERIVED.setdefault(self.policy, {})
        if key not in known:
            access = self.policy.access(self.principal, name, list(types))
            if access is None or not access.columns:
                known[key] = None
            else:
                known[key] = (self._select(access).sql(dialect=self.dialect), _hashes(access))
        return known[key]

    def _resolve(self, table: exp.Table, written: str) -> str | None:
        """The catalog's name of the table ``table`` refers to; None for the listing."""
        schema, database = table.db, table.catalog
        quoted = table.this.quoted and self.dialect != "duckdb"
        name = table.name if quoted else self._folded.get(table.name.lower())
        if schema.lower() in _SYSTEM_SCHEMAS or (
            not schema and name is None and table.name.lower().startswith(_SYSTEM_PREFIXES)
        ):
            raise Refused(f"table {written}: {_SYSTEM_HINT}")
        if not schema and table.name.lower() == LISTING:
            return None
        own_schema = not schema or schema.lower() == self.catalog.schema.lower()
        own_database = not database or database.lower() == self.catalog.database.lower()
        if not (own_schema and own_database) or name not in self.catalog.tables:
            raise Refused(f"table {written} does not exist")
        return name

    def _select(self, access: TableAccess) -> exp.Select:
        types = self.catalog.tables[access.table]
        columns: list[exp.Expr] = []
        for column in access.columns:
            mask = access.masks.get(column)
            if mask is None:
                columns.append(exp.column(column, quoted=True))
            else:
                masked = mask_expression(column, mask, types[column], self.dialect)
                columns.append(exp.alias_(masked, column, quoted=True, copy=False))
        source = exp.table_(access.table, db=self.catalog.schema, quoted=True)
        select = exp.Select(expressions=columns, from_=exp.From(this=source))
        if access.row_filter is not None:
            where = f"the row filter on {access.table} of principal {self.principal.name}"
            predicate = bind_attributes(
                _parsed(access.row_filter, self.dialect).copy(), self.principal, where
            )
            select.set("where", exp.Where(this=predicate))
            if self.dialect in _FENCED:
                select.set("offset", exp.Offset(expression=exp.Literal.number(0)))
        return select

    def _listing(self, alias: exp.TableAlias) -> exp.Expr:
        rows = []
        for name, columns in sorted(self.catalog.tables.items()):
            access = self.policy.access(self.principal, name, list(columns))
            if access is not None:
                rows += [(name, column) for column in access.columns]
        if not alias.columns:
            alias = alias.copy()
            alias.set(
                "columns", [exp.to_identifier("table_name"), exp.to_identifier("column_name")]
            )
        if rows:
            values = exp.values(rows)
            values.set("alias", alias)
            return values
        text = exp.DataType.build("text")
        empty = exp.select(
            exp.alias_(exp.cast(exp.Null(), text), "table_name"),
            exp.alias_(exp.cast(exp.Null(), text), "column_name"),
        ).where(exp.false())
        return exp.Subquery(this=empty, alias=alias)


def _hashes(access: TableAccess) -> bool:
    return any(mask == "hash" for mask in access.masks.values())


def _is_cte_reference(table: exp.Table) -> bool:
    """Whether ``table`` names a CTE in scope where it stands (a CTE shadows a table of the
    same name; within a CTE's body only the CTEs before it, and itself when recursive)."""
    if table.args.get("db") or table.args.get("catalog"):
        return False
    name = table.name.lower()
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.CTE) and isinstance(node.parent, exp.With):
            ctes = node.parent.expressions
            index = next(i for i, cte in enumerate(ctes) if cte is node)
            visible = ctes[: index + 1] if node.parent.args.get("recursive") else ctes[:index]
            if name in {cte.alias_or_name.lower() for cte in visible}:
                return True
            child, node = node.parent, node.parent.parent  # past the WITH that holds it
            if node is not None:
                child, node = node, node.parent
            continue
        with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
        if (
            isinstance(with_, exp.With)
            and child is not with_
            and name in {cte.alias_or_name.lower() for cte in with_.expressions}
        ):
            return True
        child, node = node, node.parent
    return False


@cache
def _parsed(predicate: str, dialect: str) -> exp.Expr:
    try:
        return sqlglot.parse_one(predicate, read=dialect)
    except sqlglot.errors.SqlglotError as exc:
        raise GovernError(f"row filter {predicate!r}: {str(exc).splitlines()[0]}") from None
