"""What a source schema declares, read from PostgreSQL's catalog: its tables, their columns,
keys, replica identity, foreign keys, enum types, UNIQUE and simple CHECK constraints.

Pure reading: ``read_catalog`` runs a few catalog queries on a connection the caller opened and
returns frozen dataclasses; deciding what a riverbed.yaml makes of them is
riverbed.config.proposal's business. ``read_columns`` reads only the columns, with their types
as capture will record them: ``riverbed ddl`` takes a table's column types from there until the
table's first capture. Ordinary and partitioned tables are read (a partition is
captured through its parent, so partitions are not listed); views, foreign tables and
materialized views are not tables capture can publish.

CHECK constraints are read in the simple forms a quality rule can say: comparisons of one
column with a constant joined by AND (``qty >= 1``, ``BETWEEN`` as PostgreSQL stores it) and a
list of values (``col IN (...)``, stored as ``col = ANY (ARRAY[...])``). PostgreSQL keeps a
constraint as its own normalised text (``pg_get_constraintdef``), which is parsed with sqlglot;
anything else is kept as text with ``bounds`` and ``values`` empty, so the caller can say it was
not translated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riverbed.errors import UsageError


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # as format_type prints it: integer, numeric(12,2), timestamp with time zone ...
    not_null: bool
    enum_values: tuple[str, ...] | None  # the labels, in order, when the type is an enum
    # the type as capture records it (pg_attribute's atttypid, atttypmod, which pgoutput's
    # Relation message carries): what riverbed.lake.pgtypes maps to the lake's type; a Column
    # made by hand has none (0 maps to text)
    type_oid: int = 0
    type_modifier: int = -1

    @property
    def is_temporal(self) -> bool:
        """A date or timestamp: a candidate for the table's business time."""
        return self.type == "date" or self.type.startswith("timestamp")

    @property
    def is_integer(self) -> bool:
        return self.type in ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    schema: str  # of the referenced table
    table: str
    referenced: tuple[str, ...]  # the referenced table's columns, in the order of ``columns``


@dataclass(frozen=True)
class Bound:
    """One side of a comparison: ``column op value``, op one of >=, >, <=, <."""

    op: str
    value: float


@dataclass(frozen=True)
class Check:
    name: str
    definition: str  # PostgreSQL's own text, e.g. CHECK ((amount >= (0)::numeric))
    column: str | None  # the one column it reads; None when it reads several (or none)
    bounds: tuple[Bound, ...] = ()  # a conjunction of comparisons with constants
    values: tuple[Any, ...] = ()  # column IN (values)

    @property
    def translated(self) -> bool:
        return self.column is not None and bool(self.bounds or self.values)


@dataclass(frozen=True)
class UniqueIndex:
    name: str
    columns: tuple[str, ...]
    constraint: bool  # a UNIQUE constraint (else a plain unique index)
    usable_as_identity: bool  # non-partial, on columns only, all NOT NULL: REPLICA IDENTITY USING


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    # pg_class.relreplident: d (default: the primary key), f (full), i (index), n (nothing)
    replica_identity: str
    identity_index: tuple[str, ...]  # the columns of the USING INDEX identity, if any
    foreign_keys: tuple[ForeignKey, ...]
    checks: tuple[Check, ...]
    unique: tuple[UniqueIndex, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Catalog:
    schema: str
    tables: tuple[Table, ...]


def read_catalog(conn: Any, schema: str, only: list[str] | None = None) -> Catalog:
    """The tables of ``schema`` (those named in ``only``, when given), in name order.

    Raises UsageError for a schema that does not exist, one with no tables, or a name in
    ``only`` that is not a table of the schema."""
    if conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone() is None:
        schemas = [
            r[0]
            for r in conn.execute(
                "select nspname from pg_namespace where nspname !~ '^pg_'"
                " and nspname <> 'information_schema' order by 1"
            )
        ]
        raise UsageError(
            f"--schema {schema}: no such schema in the source database; its schemas: "
            f"{', '.join(schemas)}"
        )
    names = [r[0] for r in conn.execute(_TABLES, (schema,))]
    if not names:
        raise UsageError(
            f"--schema {schema}: the schema has no tables to capture; create them first, or "
            "choose another schema with --schema"
        )
    if only:
        unknown = [name for name in only if name not in names]
        if unknown:
            raise UsageError(
                f"--tables {', '.join(unknown)}: not a table of schema {schema}; "
                f"its tables: {', '.join(names)}"
            )
        names = [name for name in names if name in only]
    columns = read_columns(conn, schema, names)
    constraints = _by_table(conn.execute(_CONSTRAINTS, (schema, names)).fetchall())
    indexes = _by_table(conn.execute(_UNIQUE_INDEXES, (schema, names)).fetchall())
    identities = {r[0]: r[1:] for r in conn.execute(_IDENTITY, (schema, names)).fetchall()}
    tables = []
    for name in names:
        cols = columns[name]
        cons = constraints.get(name, [])
        replident, identity_index = identities[name]
        not_null = {c.name for c in cols if c.not_null}
        tables.append(
            Table(
                schema=schema,
                name=name,
                columns=cols,
                primary_key=next((tuple(r[2]) for r in cons if r[1] == "p"), ()),
                replica_identity=replident,
                identity_index=tuple(identity_index or ()),
                foreign_keys=tuple(
                    ForeignKey(r[0], tuple(r[2]), r[3], r[4], tuple(r[5]))
                    for r in cons
                    if r[1] == "f"
                ),
                checks=tuple(_check(r[0], r[6], tuple(r[2])) for r in cons if r[1] == "c"),
                unique=tuple(
                    UniqueIndex(r[0], tuple(r[1]), r[2], r[3] and set(r[1]) <= not_null)
                    for r in indexes.get(name, [])
                ),
            )
        )
    return Catalog(schema, tuple(tables))


def read_columns(conn: Any, schema: str, tables: list[str]) -> dict[str, tuple[Column, ...]]:
    """The columns of each of ``tables`` in ``schema``, in column order; a name that is no
    relation of the schema is left out (``riverbed ddl`` says so for the tables it needs)."""
    return {
        table: tuple(
            Column(r[0], r[1], r[2], tuple(r[3]) if r[3] else None, r[4], r[5]) for r in rows
        )
        for table, rows in _by_table(conn.execute(_COLUMNS, (schema, tables)).fetchall()).items()
    }


def _by_table(rows: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows whose first value is a table name, grouped by it (the rest of each row kept)."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row[1:])
    return grouped


_TABLES = (
    "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace"
    " where n.nspname = %s and c.relkind in ('r', 'p') and not c.relispartition order by 1"
)
# VIRTUAL generated columns (PostgreSQL 18) are left out, as capture leaves them out; the
# columns and types are those of capture.snapshot.table_schema, so a table's types read here
# before its first capture are the ones capture will record
_COLUMNS = (
    "select c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),"
    " a.attnotnull,"
    " case when t.typtype = 'e' then array(select e.enumlabel::text from pg_enum e"
    "  where e.enumtypid = t.oid order by e.enumsortorder) end, a.atttypid, a.atttypmod"
    " from pg_attribute a join pg_class c on c.oid = a.attrelid"
    " join pg_namespace n on n.oid = c.relnamespace join pg_type t on t.oid = a.atttypid"
    " where n.nspname = %s and c.relname = any(%s) and a.attnum > 0 and not a.attisdropped"
    " and a.attgenerated <> 'v' order by c.relname, a.attnum"
)


def _names(keys: str, relation: str) -> str:
    """SQL for the column names of attribute numbers ``keys`` of ``relation``, in order."""
    return (
        f"array(select a.attname::text from unnest({keys}) with ordinality u(num, i)"
        f" join pg_attribute a on a.attrelid = {relation} and a.attnum = u.num order by u.i)"
    )


_CONSTRAINTS = (
    "select c.relname::text, k.conname::text, k.contype::text,"
    f" {_names('k.conkey', 'k.conrelid')}, fn.nspname::text, fc.relname::text,"
    f" {_names('k.confkey', 'k.confrelid')}, pg_get_constraintdef(k.oid)"
    " from pg_constraint k join pg_class c on c.oid = k.conrelid"
    " join pg_namespace n on n.oid = c.relnamespace"
    " left join pg_class fc on fc.oid = k.confrelid"
    " left join pg_namespace fn on fn.oid = fc.relnamespace"
    " where n.nspname = %s and c.relname = any(%s) and k.contype in ('p', 'f', 'c')"
    " order by c.relname, k.conname"
)
# unique indexes (a UNIQUE constraint has one) on plain columns; partial ones cannot be an
# identity, and the unique rule would not know their predicate
_UNIQUE_INDEXES = (
    "select c.relname::text, ic.relname::text,"
    f" {_names('i.indkey::int2[]', 'i.indrelid')},"
    " exists (select 1 from pg_constraint k where k.conindid = i.indexrelid and k.contype = 'u'),"
    " i.indpred is null"
    " from pg_index i join pg_class c on c.oid = i.indrelid"
    " join pg_class ic on ic.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace"
    " where n.nspname = %s and c.relname = any(%s) and i.indisunique and not i.indisprimary"
    " and i.indexprs is null and i.indpred is null order by c.relname, ic.relname"
)
_IDENTITY = (
    "select c.relname::text, c.relreplident::text,"
    " (select " + _names("i.indkey::int2[]", "i.indrelid") + " from pg_index i"
    "  where i.indrelid = c.oid and i.indisreplident)"
    " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
    " where n.nspname = %s and c.relname = any(%s)"
)


def _check(name: str, definition: str, columns: tuple[str, ...]) -> Check:
    """A CHECK constraint, translated when it is one of the simple forms (module docstring)."""
    if len(columns) != 1:
        return Check(name, definition, None)
    column = columns[0]
    import sqlglot  # only init reads CHECK constraints
    from sqlglot import exp

    body = definition.removeprefix("CHECK ").removesuffix(" NOT VALID")
    try:
        where = sqlglot.parse_one("select 1 where " + body, read="postgres").args["where"]
    except sqlglot.errors.ParseError:
        return Check(name, definition, column)
    terms = _conjuncts(_bare(where.this), exp)
    bounds = [_bound(term, column, exp) for term in terms]
    if bounds and all(b is not None for b in bounds):
        return Check(name, definition, column, bounds=tuple(b for b in bounds if b))
    if len(terms) == 1:
        values = _in_values(terms[0], column, exp)
        if values:
            return Check(name, definition, column, values=values)
    return Check(name, definition, column)


def _bare(node: Any) -> Any:
    """``node`` without the parentheses and casts PostgreSQL puts around everything."""
    from sqlglot import exp

    while isinstance(node, exp.Paren | exp.Cast):
        node = node.this
    return node


def _conjuncts(node: Any, exp: Any) -> list[Any]:
    if isinstance(node, exp.And):
        return _conjuncts(_bare(node.this), exp) + _conjuncts(_bare(node.expression), exp)
    return [node]


_OPS = {"GTE": ">=", "GT": ">", "LTE": "<=", "LT": "<"}
_FLIPPED = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}


def _bound(node: Any, column: str, exp: Any) -> Bound | None:
    op = _OPS.get(type(node).__name__)
    if op is None:
        return None
    left, right = _bare(node.this), _bare(node.expression)
    if not _is_column(left, column, exp):  # 0 <= qty reads as qty >= 0
        left, right, op = right, left, _FLIPPED[op]
    value = _number(right, exp)
    if not _is_column(left, column, exp) or value is None:
        return None
    return Bound(op, value)


def _in_values(node: Any, column: str, exp: Any) -> tuple[Any, ...]:
    if not isinstance(node, exp.EQ) or not _is_column(_bare(node.this), column, exp):
        return ()
    target = _bare(node.expression)
    if not isinstance(target, exp.Any):
        return ()
    array = _bare(target.this)
    if not isinstance(array, exp.Array):
        return ()
    values = []
    for item in array.expressions:
        item = _bare(item)
        if not isinstance(item, exp.Literal):
            return ()
        number = None if item.is_string else _number(item, exp)
        values.append(
            item.this if number is None else int(number) if number.is_integer() else number
        )
    return tuple(values)


def _is_column(node: Any, column: str, exp: Any) -> bool:
    return isinstance(node, exp.Column) and not node.table and node.name == column


def _number(node: Any, exp: Any) -> float | None:
    negative = isinstance(node, exp.Neg)
    if negative:
        node = _bare(node.this)
    if not isinstance(node, exp.Literal):
        return None
    try:
        value = float(node.this)
    except ValueError:
        return None
    return -value if negative else value
