"""Column masks as SQL expressions, one builder per mask, generated in the warehouse's dialect
(DuckDB and PostgreSQL).

A mask is applied inside the governed derived table that replaces a table in a query
(riverbed.govern.gateway), so a masked column holds only masked values for everything the
query does with it: selected, compared in WHERE, grouped, ordered, joined. What each gives:

==============  ============================================================================
hash            HMAC-SHA256 of the value's text under the project's PII key, in hex: stable
                and joinable (the same value gives the same digest in every table), and equal
                to what ``pii: {col: hash}`` stores at transform time
redact          ``***`` (NULL stays NULL)
show_last_4     ``***`` and the last 4 characters of the value's text
show_first_4    the first 4 characters and ``***``
null            NULL, of the column's type
year_only       a date or timestamp truncated to the first day of its year (another type:
                NULL, since there is no year to keep)
email_domain    ``***@`` and what follows the ``@``
{sql: ...}      the template with ``{column}`` standing for the column
==============  ============================================================================

The PII key never appears in the SQL text (an error message quoting the statement would show
it): ``hash`` reads the key's HMAC pads from the session, a DuckDB variable or a PostgreSQL
setting, which ``key_statements`` sets before the query runs and which the gateway does not let
a query read (``getvariable``, ``current_setting`` are refused).
"""

from __future__ import annotations

import hashlib
from functools import cache

import sqlglot
from sqlglot import exp

from riverbed.config.governance import CustomMask, Mask
from riverbed.govern.policy import GovernError

_PLACEHOLDER = "__riverbed_masked"
_BLOCK = 64  # SHA-256's block size: HMAC pads the key to it
# the HMAC pads (RFC 2104), read from the session by the hash mask, per dialect
_HASH = {
    "duckdb": "SHA256(GETVARIABLE('riverbed_mask_outer') || UNHEX(SHA256("
    "GETVARIABLE('riverbed_mask_inner') || ENCODE(CAST(__riverbed_masked AS TEXT)))))",
    "postgres": "ENCODE(SHA256(DECODE(CURRENT_SETTING('riverbed.mask_outer'), 'hex') || "
    "SHA256(DECODE(CURRENT_SETTING('riverbed.mask_inner'), 'hex') || "
    "CONVERT_TO(CAST(__riverbed_masked AS TEXT), 'UTF8'))), 'hex')",
}
_TEMPLATES = {
    "redact": "CASE WHEN __riverbed_masked IS NULL THEN NULL ELSE '***' END",
    "show_last_4": "'***' || RIGHT(CAST(__riverbed_masked AS TEXT), 4)",
    "show_first_4": "LEFT(CAST(__riverbed_masked AS TEXT), 4) || '***'",
    "email_domain": "'***@' || SPLIT_PART(CAST(__riverbed_masked AS TEXT), '@', 2)",
}


def mask_expression(column: str, mask: Mask, column_type: str, dialect: str) -> exp.Expr:
    """The SQL expression that masks ``column`` (of ``column_type``, as the warehouse names
    it) with ``mask``, in ``dialect``."""
    target = exp.column(column, quoted=True)
    if isinstance(mask, CustomMask):
        template = _parse(mask.sql.replace("{column}", _PLACEHOLDER), dialect)
    elif mask == "hash":
        if dialect not in _HASH:
            raise GovernError(f"the hash mask is not available on a {dialect} warehouse")
        template = _parse(_HASH[dialect], dialect)
    elif mask == "null":
        return _typed_null(column_type, dialect)
    elif mask == "year_only":
        kind = column_type.lower()
        if "date" not in kind and "timestamp" not in kind:
            return _typed_null(column_type, dialect)
        truncated = exp.DateTrunc(unit=exp.Literal.string("year"), this=target)
        return exp.cast(truncated, _data_type(column_type, dialect) or exp.DataType.build("date"))
    else:
        template = _parse(_TEMPLATES[mask], dialect)
    return template.transform(
        lambda node: (
            target.copy()
            if isinstance(node, exp.Column) and node.name == _PLACEHOLDER and not node.table
            else node
        )
    )


def key_statements(key: bytes, dialect: str) -> list[str]:
    """The statements that put the HMAC pads of ``key`` in the session for the hash mask.
    They hold the key: run them, never log them."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = bytes(b ^ 0x36 for b in key).hex()
    outer = bytes(b ^ 0x5C for b in key).hex()
    if dialect == "duckdb":
        return [
            f"SET VARIABLE riverbed_mask_inner = unhex('{inner}')",
            f"SET VARIABLE riverbed_mask_outer = unhex('{outer}')",
        ]
    return [f"SET riverbed.mask_inner = '{inner}'", f"SET riverbed.mask_outer = '{outer}'"]


def _typed_null(column_type: str, dialect: str) -> exp.Expr:
    kind = _data_type(column_type, dialect)
    return exp.Null() if kind is None else exp.cast(exp.Null(), kind)


@cache
def _data_type(column_type: str, dialect: str) -> exp.DataType | None:
    try:
        return exp.DataType.build(column_type, dialect=dialect)
    except (sqlglot.errors.SqlglotError, ValueError):
        return None  # a type sqlglot does not know, e.g. a PostgreSQL enum's USER-DEFINED


def _parse(template: str, dialect: str) -> exp.Expr:
    return _parsed(template, dialect).copy()


@cache
def _parsed(template: str, dialect: str) -> exp.Expr:
    try:
        return sqlglot.parse_one(template, read=dialect)
    except sqlglot.errors.SqlglotError as exc:
        raise GovernError(
            f"mask {template!r}: not valid SQL ({str(exc).splitlines()[0]})"
        ) from None
