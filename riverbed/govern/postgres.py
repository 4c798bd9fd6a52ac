"""The policy, natively on a PostgreSQL warehouse: what ``riverbed govern apply`` runs, so that
psql or a BI tool logging in as a principal sees exactly what the gateway shows.

Per principal ``P`` (the design, and why):

- a LOGIN role ``P``, with the principal's password (as a SCRAM verifier computed here: the
  clear password never reaches the server or its logs) or none (``PASSWORD NULL``: no password
  login; a BI tool needs one). It holds nothing on the warehouse's tables: only USAGE on its
  own schema ``P`` and SELECT on the views there; its ``search_path`` in this database is that
  schema, so ``SELECT * FROM dim_customer`` reads its view.
- a NOLOGIN role ``P_views`` that owns those views and holds a column-level SELECT on exactly
  the granted columns of each granted table, under a row-level security policy
  ``riverbed_P`` whose predicate is the grant's row filter with P's attributes bound as
  literals (riverbed.govern.policy.bind_attributes, as the gateway binds them). A view reads
  its table with its owner's rights, so P reads the rows and columns P_views may, masked
  by the view; P cannot read the table around the view (no privilege), nor P_views' grants
  (P is not its member). The gateway runs a principal's queries as P_views
  (``enter_principal_role``): its rewritten SQL reads the base tables, which P_views may read
  only as the policy says, and it is never a superuser.
- each view is the gateway's governed SELECT of the table (granted columns, masks, row filter)
  with ``security_barrier``, so no predicate of a query runs on a row the filter withholds.

Per principal rather than per policy role: a principal's access is the union of its roles
resolved by ``Policy.access`` (columns the union, rows the OR, the first role's mask), and
attributes differ per principal; one object per principal built from ``Policy.access`` is the
gateway's answer by construction, where roles combined by PostgreSQL's membership rules would
be a second, different one.

Default deny: ``REVOKE ALL ... FROM PUBLIC`` on the warehouse schema's tables; every table
there has row-level security ENABLEd and FORCEd, with ``riverbed_owner`` letting its owner
(the pipeline's role) read and write every row, and no other policy but the principals'.
The hash mask's key (its HMAC pads) is in ``riverbed_govern.mask_key``, readable by the views'
owners only, never in a view's text (pg_views shows every view's definition to everyone).

Apply converges in one transaction: the principals' schemas are dropped and rebuilt, the
views roles' privileges revoked and granted afresh, the ``riverbed_*`` policies dropped and
created; a principal gone from the policy loses its schema, privileges and policies, and its
roles are dropped unless another database still holds privileges of theirs. A role or schema
of that name that Riverbed did not create (no Riverbed comment) is never taken over.

What PostgreSQL does not hide: the system catalogs (pg_class, pg_views) list every table's
and view's name and definition to every role; information_schema, which BI tools read, lists
only what the role may read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlglot import exp

from riverbed.config.fields import SecretRef
from riverbed.govern.gateway import Catalog
from riverbed.govern.masks import key_statements, mask_expression
from riverbed.govern.policy import GovernError, Policy, TableAccess, bind_attributes

MARKER = "riverbed govern"  # the comment on every role and schema apply manages
_VIEWS = f"{MARKER}: the views of principal "  # the comment on a principal's schema
KEY_SCHEMA = "riverbed_govern"
_OWNER_POLICY = "riverbed_owner"
_RESERVED = frozenset({"public", "information_schema", KEY_SCHEMA})
_HEX = re.compile(r"'([0-9a-f]+)'")
_SCRAM_ITERATIONS = 4096  # PostgreSQL's scram_iterations default


def views_role(principal: str) -> str:
    """The NOLOGIN role that owns ``principal``'s views and holds its grants."""
    return f"{principal}_views"


@dataclass(frozen=True)
class Password:
    """The statement that sets ``role``'s password from ``ref`` (None: no password). Rendered
    with the verifier only when run; shown with where the password comes from."""

    role: str
    ref: SecretRef | None
    key: str  # governance.principals.<name>.password

    def shown(self) -> str:
        if self.ref is None:
            return f"ALTER ROLE {ident(self.role)} PASSWORD NULL"
        return f"ALTER ROLE {ident(self.role)} PASSWORD '<SCRAM verifier of {self.key}>'"

    def run(self) -> str:
        if self.ref is None:
            return self.shown()
        try:
            secret = self.ref.reveal()
        except ValueError as exc:
            raise GovernError(f"{self.key}: {exc}") from None
        return f"ALTER ROLE {ident(self.role)} PASSWORD {literal(scram_verifier(secret))}"


@dataclass(frozen=True)
class MaskKey:
    """The statement that stores the hash mask's pads; shown without them."""

    key: bytes = field(repr=False)

    def shown(self) -> str:
        return f"INSERT INTO {KEY_SCHEMA}.mask_key VALUES ('<pii key pads>', '<pii key pads>')"

    def run(self) -> str:
        # the pads as the gateway's session gets them: one derivation of the key
        pads = [_HEX.findall(s)[-1] for s in key_statements(self.key, "postgres")]
        return f"INSERT INTO {KEY_SCHEMA}.mask_key VALUES ({literal(pads[0])}, {literal(pads[1])})"


Statement = str | Password | MaskKey


@dataclass(frozen=True)
class PrincipalPlan:
    """What one principal gets: its granted tables (with at least one column) and the view
    SELECT of each."""

    name: str
    password: SecretRef | None
    tables: dict[str, TableAccess]
    views: dict[str, str]  # table: the view's SELECT (PostgreSQL)
    filters: dict[str, str | None]  # table: the row filter, attributes bound (None: all rows)

    @property
    def hashes(self) -> bool:
        return any(m == "hash" for a in self.tables.values() for m in a.masks.values())


@dataclass(frozen=True)
class State:
    """What the warehouse holds that apply manages or must respect."""

    base_tables: dict[str, str]  # the warehouse schema's tables (not views): their owner
    # ('' not known: the statements say CURRENT_USER)
    roles: dict[str, str]  # every role of the cluster: its comment ('' for none)
    schemas: dict[str, str]  # every schema of the database: its comment
    policies: list[tuple[str, str]]  # (table, policy) of the riverbed_* policies
    shared_elsewhere: frozenset[str]  # roles with privileges in other databases

    @classmethod
    def empty(cls, catalog: Catalog) -> State:
        return cls({t: "" for t in catalog.tables}, {}, {}, [], frozenset())


def plan(policy: Policy, catalog: Catalog) -> list[PrincipalPlan]:
    """Every configured principal's tables and views, resolved as the gateway resolves them."""
    plans = []
    for name in policy.principal_names:
        _check_name(name, catalog)
        principal = policy.principal(name)
        config = policy.principal_config(name)
        tables: dict[str, TableAccess] = {}
        views: dict[str, str] = {}
        filters: dict[str, str | None] = {}
        for table, types in sorted(catalog.tables.items()):
            access = policy.access(principal, table, list(types))
            if access is None or not access.columns:
                continue
            tables[table] = access
            select = _view_select(access, types, catalog.schema)
            filters[table] = None
            if access.row_filter is not None:
                where = f"the row filter on {table} of principal {name}"
                predicate = bind_attributes(_predicate(access.row_filter), principal, where)
                filters[table] = predicate.sql(dialect="postgres")
                select = select.where(predicate, copy=False)
            views[table] = select.sql(dialect="postgres")
        password = config.password if config else None
        plans.append(PrincipalPlan(name, password, tables, views, filters))
    return plans


def _check_name(name: str, catalog: Catalog) -> None:
    lowered = name.lower()
    if lowered in _RESERVED or lowered == catalog.schema.lower() or lowered.startswith("pg_"):
        raise GovernError(
            f"principal {name}: its PostgreSQL role and schema would be named {name}, which "
            "is reserved or the warehouse's schema; rename the principal"
        )
    if len(views_role(name)) > 63:
        raise GovernError(f"principal {name}: the name is too long for PostgreSQL (57 at most)")


def _view_select(access: TableAccess, types: dict[str, str], schema: str) -> exp.Select:
    columns: list[exp.Expr] = []
    for column in access.columns:
        mask = access.masks.get(column)
        if mask is None:
            columns.append(exp.column(column, quoted=True))
            continue
        masked = mask_expression(column, mask, types[column], "postgres").transform(_stored_pads)
        columns.append(exp.alias_(masked, column, quoted=True, copy=False))
    source = exp.table_(access.table, db=schema, quoted=True)
    return exp.Select(expressions=columns).from_(source, copy=False)


def _stored_pads(node: exp.Expr) -> exp.Expr:
    """The hash mask's ``current_setting('riverbed.mask_*')`` read from the key table: a
    direct login has no such setting, and setting it would hand the principal the key."""
    if isinstance(node, exp.Anonymous) and node.name.lower() == "current_setting":
        setting = node.expressions[0].name  # riverbed.mask_inner or riverbed.mask_outer
        pad = "inner_pad" if setting.endswith("inner") else "outer_pad"
        return exp.Subquery(this=exp.select(pad).from_(f"{KEY_SCHEMA}.mask_key"))
    return node


def _predicate(row_filter: str) -> exp.Expr:
    import sqlglot

    return sqlglot.parse_one(row_filter, read="postgres")


def statements(
    plans: list[PrincipalPlan], catalog: Catalog, state: State, key: bytes
) -> list[Statement]:
    """What apply runs, in order, to bring the warehouse from ``state`` to ``plans``."""
    _refuse_foreign(plans, state)
    wanted = {p.name for p in plans}
    schema = ident(catalog.schema)
    out: list[Statement] = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM PUBLIC",
        f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        f"CREATE SCHEMA IF NOT EXISTS {KEY_SCHEMA}",
        f"COMMENT ON SCHEMA {KEY_SCHEMA} IS {literal(MARKER + ': the hash mask key')}",
        f"REVOKE ALL ON SCHEMA {KEY_SCHEMA} FROM PUBLIC",
        f"CREATE TABLE IF NOT EXISTS {KEY_SCHEMA}.mask_key (inner_pad text, outer_pad text)",
        f"REVOKE ALL ON {KEY_SCHEMA}.mask_key FROM PUBLIC",
        f"DELETE FROM {KEY_SCHEMA}.mask_key",
        MaskKey(key),
    ]
    stale = [n for n, note in state.schemas.items() if note.startswith(_VIEWS)]
    for name in sorted(n for n in stale if n not in wanted):
        out += _dropped(name, catalog, state)
    for table, policy_name in state.policies:
        out.append(f"DROP POLICY IF EXISTS {ident(policy_name)} ON {schema}.{ident(table)}")
    for table, owner in sorted(state.base_tables.items()):
        target = f"{schema}.{ident(table)}"
        out += [
            f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY {_OWNER_POLICY} ON {target} FOR ALL"
            f" TO {ident(owner) if owner else 'CURRENT_USER'}"
            " USING (true) WITH CHECK (true)",
        ]
    for principal in plans:
        out += _principal_statements(principal, catalog, state)
    return out


def _refuse_foreign(plans: list[PrincipalPlan], state: State) -> None:
    for principal in plans:
        for role in (principal.name, views_role(principal.name)):
            if role in state.roles and not _managed(state.roles[role]):
                raise GovernError(
                    f"principal {principal.name}: PostgreSQL role {role} exists and is not "
                    "Riverbed's; rename the principal (apply never takes over a role)"
                )
        if principal.name in state.schemas and not _managed(state.schemas[principal.name]):
            raise GovernError(
                f"principal {principal.name}: schema {principal.name} exists and is not "
                "Riverbed's; rename the principal (apply never takes over a schema)"
            )


def _managed(comment: str) -> bool:
    return comment.startswith(MARKER)


def _dropped(name: str, catalog: Catalog, state: State) -> list[Statement]:
    """A principal gone from the policy: its schema, privileges and policies here; its roles
    too unless another database holds privileges of theirs."""
    out: list[Statement] = [f"DROP SCHEMA IF EXISTS {ident(name)} CASCADE"]
    for role in (views_role(name), name):
        if role in state.roles:
            out.append(f"DROP OWNED BY {ident(role)}")
            if role not in state.shared_elsewhere:
                out.append(f"DROP ROLE {ident(role)}")
            else:
                out.append(
                    f"ALTER ROLE {ident(role)} IN DATABASE {ident(catalog.database)} "
                    "RESET search_path"
                )
    return out


def _principal_statements(
    principal: PrincipalPlan, catalog: Catalog, state: State
) -> list[Statement]:
    name, owner = principal.name, views_role(principal.name)
    login, views, own = ident(name), ident(owner), ident(name)
    schema = ident(catalog.schema)
    limits = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    out: list[Statement] = []
    for role, kind in ((name, "LOGIN"), (owner, "NOLOGIN")):
        verb = "ALTER" if role in state.roles else "CREATE"
        note = f"{MARKER}: principal {name}" + (" (owns its views)" if role == owner else "")
        out += [
            f"{verb} ROLE {ident(role)} {kind} {limits} INHERIT",
            f"COMMENT ON ROLE {ident(role)} IS {literal(note)}",
        ]
    out += [
        Password(name, principal.password, f"governance.principals.{name}.password"),
        f"REVOKE {views} FROM {login}",
        f"ALTER ROLE {login} IN DATABASE {ident(catalog.database)} SET search_path = {own}",
        f"GRANT CONNECT ON DATABASE {ident(catalog.database)} TO {login}",
        f"DROP SCHEMA IF EXISTS {own} CASCADE",
        f"CREATE SCHEMA {own}",
        f"COMMENT ON SCHEMA {own} IS {literal(_VIEWS + name)}",
        f"REVOKE ALL ON SCHEMA {own} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {own} TO {login}",
        f"GRANT CREATE ON SCHEMA {own} TO {views}",  # for ALTER VIEW ... OWNER; revoked below
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {login}, {views}",
        f"REVOKE ALL ON SCHEMA {schema} FROM {login}",
        f"GRANT USAGE ON SCHEMA {schema} TO {views}",
    ]
    if principal.hashes:
        out += [
            f"GRANT USAGE ON SCHEMA {KEY_SCHEMA} TO {views}",
            f"GRANT SELECT ON {KEY_SCHEMA}.mask_key TO {views}",
        ]
    else:
        out.append(f"REVOKE ALL ON {KEY_SCHEMA}.mask_key FROM {views}")
    for table, access in principal.tables.items():
        target = f"{schema}.{ident(table)}"
        columns = ", ".join(ident(c) for c in access.columns)
        view = f"{own}.{ident(table)}"
        out.append(f"GRANT SELECT ({columns}) ON {target} TO {views}")
        if table in state.base_tables:
            using = principal.filters[table] or "true"
            out.append(
                f"CREATE POLICY {ident('riverbed_' + name)} ON {target} FOR SELECT "
                f"TO {views} USING ({using})"
            )
        out += [
            f"CREATE VIEW {view} WITH (security_barrier) AS {principal.views[table]}",
            f"ALTER VIEW {view} OWNER TO {views}",
            f"GRANT SELECT ON {view} TO {login}",
        ]
    out.append(f"REVOKE CREATE ON SCHEMA {own} FROM {views}")
    return out


def shown(statement: Statement) -> str:
    """A statement as ``govern show`` prints it: never a password or key."""
    return statement if isinstance(statement, str) else statement.shown()


def runnable(statement: Statement) -> str:
    return statement if isinstance(statement, str) else statement.run()


def scram_verifier(password: str) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn computes it), so the server never receives the password itself."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def summary(plans: list[PrincipalPlan]) -> Iterator[tuple[str, list[str]]]:
    """Per principal, its granted tables as ``table(columns)``: what apply records."""
    for p in plans:
        yield p.name, [f"{t}({', '.join(a.columns)})" for t, a in p.tables.items()]
