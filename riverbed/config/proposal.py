"""What `riverbed init --from-source` proposes for each table of a source schema: a starting
point the user edits, every choice with the reason riverbed.config.writer prints beside it.

The decisions, from the catalog (riverbed.source.catalog) alone:

* **Keys**: the primary key; else the replica identity's index (USING INDEX); else, under
  REPLICA IDENTITY FULL, a unique index on NOT NULL columns or, failing one, every column
  (capture identifies such a row by all of them). A table with none of these is left out:
  publishing it would make the source application's UPDATE and DELETE on it fail; the fix is
  written beside it.
* **Kind**: a table another captured table references by foreign key is a *dimension* (SCD2,
  its non-key columns tracked): facts key into dimensions, and a thing others point at is a
  thing, not an event. A table that only references others, or stands alone, is a *fact*. A
  table that is both (books: referenced by loans, referencing authors) is a dimension: the
  tables pointing at it need it as one; its own foreign keys become tracked columns and
  ``references`` rules. A referenced table with no column besides its key has nothing to
  track, so it stays a fact.
* **Rules**, only where the schema says something a batch can break or a rule can tell: a
  single-column foreign key to a captured table -> ``references`` (warn: a child may arrive
  before its parent's batch); an enum -> ``accepted_values`` (warn: ALTER TYPE ... ADD VALUE
  adds labels legitimately); a simple CHECK -> ``range`` / ``accepted_values`` (quarantine:
  what the source refused once, the warehouse should not take; a strict comparison makes its
  bound ``exclusive_min`` / ``exclusive_max``); a UNIQUE constraint on one column ->
  ``unique`` (warn). NOT NULL is already the source's promise, so it is checked again only
  where a null would hurt downstream: a fact's foreign key columns (its dimension keys); the
  other NOT NULL columns are listed in a comment. A *nullable* business-time column gets a
  ``not_null`` rule (warn): a null there dates its row by the commit time.
* **Business time**: a fact's ``event_time`` (the column saying when the event happened) and a
  dimension's ``effective_from`` (its updated_at-like column), picked by name as
  riverbed.config.business_time says; a table with no such column keeps the commit time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from riverbed.config.business_time import TimePick, effective_from, event_time
from riverbed.config.fields import IDENTIFIER
from riverbed.source.catalog import Catalog, Check, Table


@dataclass(frozen=True)
class Rule:
    settings: dict[str, Any]  # the rule's YAML mapping, in the order written
    origin: str  # the comment: where in the schema it came from


@dataclass
class TablePlan:
    table: Table
    kind: str  # dimension | fact
    target: str
    keys: tuple[str, ...]
    tracked: tuple[str, ...] = ()
    why: list[str] = field(default_factory=list)  # comments on the kind
    key_reason: str = ""
    tracked_reason: str = ""
    rules: list[Rule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the schema says that no rule checks
    time: TimePick | None = None  # the column that dates its rows (riverbed.config.business_time)

    @property
    def business_time(self) -> str | None:
        return self.time.column if self.time else None


@dataclass(frozen=True)
class LeftOut:
    table: Table
    reason: str
    fixes: tuple[str, ...]  # SQL that makes the table capturable, one statement each


@dataclass(frozen=True)
class Proposal:
    schema: str
    tables: tuple[TablePlan, ...]
    left_out: tuple[LeftOut, ...]


def propose(catalog: Catalog) -> Proposal:
    keyed: dict[str, tuple[tuple[str, ...], str]] = {}
    left_out = []
    for table in catalog.tables:
        found = _keys(table)
        if isinstance(found, LeftOut):
            left_out.append(found)
        else:
            keyed[table.name] = found
    referenced_by: dict[str, list[str]] = {}
    for table in catalog.tables:
        for fk in table.foreign_keys:
            if table.name in keyed and fk.schema == catalog.schema and fk.table != table.name:
                referenced_by.setdefault(fk.table, []).append(table.name)
    plans = []
    targets: set[str] = set()
    for table in catalog.tables:
        if table.name not in keyed:
            continue
        keys, key_reason = keyed[table.name]
        plan = _kind(table, keys, sorted(set(referenced_by.get(table.name, []))), targets)
        plan.key_reason = key_reason
        targets.add(plan.target)
        plan.time = event_time(table) if plan.kind == "fact" else effective_from(table)
        _rules(plan, set(keyed), catalog.schema)
        plans.append(plan)
    _dimension_keys(plans)
    return Proposal(catalog.schema, tuple(plans), tuple(left_out))


def _keys(table: Table) -> tuple[tuple[str, ...], str] | LeftOut:
    if not IDENTIFIER.match(table.name):  # tables: takes plain names (cross_reference_problems)
        plain = re.sub(r"[^A-Za-z0-9_]+", "_", table.name).strip("_").lower() or "t"
        plain = plain if IDENTIFIER.match(plain) else f"t_{plain}"
        return LeftOut(
            table,
            "its name is not a plain identifier (letters, digits, underscore), which riverbed.yaml "
            "needs",
            (f'alter table {table.schema}."{table.name}" rename to {plain};',),
        )
    if table.primary_key:
        return table.primary_key, "the primary key"
    if table.replica_identity == "i" and table.identity_index:
        return table.identity_index, "the replica identity's index (no primary key)"
    usable = next((u for u in table.unique if u.usable_as_identity), None)
    if table.replica_identity == "f":
        if usable is not None:
            return usable.columns, (
                f"unique index {usable.name} (no primary key; REPLICA IDENTITY FULL)"
            )
        return tuple(c.name for c in table.columns), (
            "every column (no primary key; REPLICA IDENTITY FULL identifies a row by all "
            "of them); a primary key would be a better one"
        )
    name = table.qualified
    if usable is not None:
        fixes = (
            f"alter table {name} replica identity using index {usable.name};",
            f"alter table {name} add primary key ({', '.join(usable.columns)});",
        )
    else:
        fixes = (
            f"alter table {name} add column id bigint generated always as identity primary key;",
            f"alter table {name} replica identity full;",
        )
    what = "no primary key" if table.replica_identity == "d" else "REPLICA IDENTITY NOTHING"
    return LeftOut(
        table,
        f"{what}: publishing it would make the source's UPDATE and DELETE on it fail",
        fixes,
    )


def _kind(table: Table, keys: tuple[str, ...], referrers: list[str], taken: set[str]) -> TablePlan:
    others = tuple(c.name for c in table.columns if c.name not in keys)
    references = sorted({fk.table for fk in table.foreign_keys if fk.table != table.name})
    if referrers and others:
        plan = TablePlan(table, "dimension", _target("dim", table.name, taken), keys, others)
        plan.why.append(
            f"dimension (SCD2): referenced by {', '.join(referrers)}"
            + (
                f"; it also references {', '.join(references)}, and a table that is both is a "
                "dimension, since the tables pointing at it need one (make it a fact, without "
                "tracked, if its rows are events)"
                if references
                else ""
            )
        )
        plan.tracked_reason = (
            "tracked: every non-key column (a change makes a version); move the columns whose "
            "history you do not need to type1: [...] (overwritten in place)"
        )
        return plan
    plan = TablePlan(table, "fact", _target("fact", table.name, taken), keys)
    if referrers:
        plan.why.append(
            f"fact: referenced by {', '.join(referrers)}, but it has no column besides its "
            "key to track as a dimension"
        )
    elif references:
        plan.why.append(f"fact (append-only events): references {', '.join(references)}")
    else:
        plan.why.append(
            "fact (append-only events): no captured table references it and it references "
            "none; make it a dimension (with tracked: [...]) if its rows are things, not events"
        )
    return plan


def _dimension_keys(plans: list[TablePlan]) -> None:
    """Say which dimensions each fact keys into: the load resolves a fact column named like a
    dimension's single-column key (riverbed.load.model), unless it is one of the fact's keys."""
    dimensions = {p.keys[0]: p.target for p in plans if p.kind == "dimension" and len(p.keys) == 1}
    for plan in plans:
        if plan.kind != "fact":
            continue
        carried = [c.name for c in plan.table.columns if c.name in dimensions]
        resolved = [f"{dimensions[c]} by {c}" for c in carried if c not in plan.keys]
        plan.why.append(
            f"keyed into {', '.join(resolved)}"
            if resolved
            else "keyed into no dimension: it carries no dimension's single-column key"
        )
        in_keys = [c for c in carried if c in plan.keys]
        if in_keys:
            plan.why.append(
                f"not keyed into a dimension by {', '.join(in_keys)}: a fact's own key column "
                "is not resolved to a surrogate key"
            )


def _target(prefix: str, name: str, taken: set[str]) -> str:
    base = name
    if prefix == "dim":  # dim_customer, as the demo names them
        if name.endswith("ies"):
            base = name[:-3] + "y"
        elif name.endswith("s") and not name.endswith("ss"):
            base = name[:-1]
    target = f"{prefix}_{base}"
    return target if target not in taken else f"{prefix}_{name}"


def _rules(plan: TablePlan, captured: set[str], schema: str) -> None:
    table = plan.table
    fk_columns: set[str] = set()
    for fk in table.foreign_keys:
        parent = f"{fk.table}({', '.join(fk.referenced)})"
        if len(fk.columns) != 1:
            plan.notes.append(
                f"foreign key {fk.name} ({', '.join(fk.columns)}) -> {parent}: not checked, a "
                "references rule checks one column"
            )
        elif fk.schema != schema or fk.table not in captured:
            plan.notes.append(
                f"foreign key {fk.name} ({fk.columns[0]}) -> {fk.schema}.{parent}: not "
                "checked, that table is not captured"
            )
        elif fk.table == table.name:
            plan.notes.append(
                f"foreign key {fk.name} ({fk.columns[0]}) -> {parent}: not checked, it points "
                "into the table itself"
            )
        else:
            fk_columns.add(fk.columns[0])
            plan.rules.append(
                Rule(
                    {
                        "type": "references",
                        "column": fk.columns[0],
                        "reference": f"{fk.table}.{fk.referenced[0]}",
                        "action": "warn",
                    },
                    f"foreign key {fk.name}; warn: a child may come in a batch before its parent",
                )
            )
    _not_null_rules(plan, fk_columns)
    for column in table.columns:
        if column.enum_values:
            plan.rules.append(
                Rule(
                    {
                        "type": "accepted_values",
                        "column": column.name,
                        "values": list(column.enum_values),
                        "action": "warn",
                    },
                    f"enum {column.type}; warn: ALTER TYPE ... ADD VALUE adds labels on purpose",
                )
            )
    for check in table.checks:
        _check_rule(plan, check)
    for unique in table.unique:
        if unique.constraint and len(unique.columns) == 1 and unique.columns != plan.keys:
            plan.rules.append(
                Rule(
                    {"type": "unique", "column": unique.columns[0], "action": "warn"},
                    f"UNIQUE constraint {unique.name}",
                )
            )


def _not_null_rules(plan: TablePlan, fk_columns: set[str]) -> None:
    table = plan.table
    checked = set()
    if plan.kind == "fact":
        for name in sorted(fk_columns):
            if name in plan.keys or not table.column(name).not_null:
                continue
            checked.add(name)
            plan.rules.append(
                Rule(
                    {"type": "not_null", "column": name, "action": "quarantine"},
                    "NOT NULL in the source, and a fact's dimension key: a null would lose the "
                    "link",
                )
            )
    pick = plan.time
    if pick and pick.column and not table.column(pick.column).not_null:
        plan.rules.append(
            Rule(
                {"type": "not_null", "column": pick.column, "action": "warn"},
                f"nullable, and the {pick.setting} column: a null dates its row by the commit "
                "time instead",
            )
        )
    rest = [c.name for c in table.columns if c.not_null and c.name not in plan.keys]
    rest = [name for name in rest if name not in checked]
    if rest:
        plan.notes.append(
            f"NOT NULL in the source, not checked again (the source enforces it): {', '.join(rest)}"
        )


def _check_rule(plan: TablePlan, check: Check) -> None:
    origin = f"CHECK {check.name}: {check.definition.removeprefix('CHECK ')}"
    if not check.translated or check.column is None:
        plan.notes.append(f"{origin}: not translated (not one of the simple forms)")
        return
    column = plan.table.column(check.column)
    if check.values:
        settings: dict[str, Any] = {"type": "accepted_values", "column": column.name}
        settings |= {"values": list(check.values)}
    else:
        settings = {"type": "range", "column": column.name}
        for bound in check.bounds:
            side = "min" if bound.op.startswith(">") else "max"
            value = bound.value
            settings[side] = int(value) if value.is_integer() else value
            if len(bound.op) == 1:  # a strict bound
                settings[f"exclusive_{side}"] = True
    settings |= {"name": check.name, "action": "quarantine"}
    plan.rules.append(Rule(settings, origin))
