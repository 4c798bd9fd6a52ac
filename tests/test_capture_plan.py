"""How `riverbed capture` starts (riverbed.capture.plan), as a truth table: no PostgreSQL, each
row a combination of the slot's state, the state store's records and the flags, and the plan
it must give. The capture tests run the same rules against a real source."""

from __future__ import annotations

from typing import Any

import pytest

from riverbed.capture.plan import Refusal, StartFacts, StartPlan, plan_start, refusal
from riverbed.capture.slot import SlotState
from riverbed.lake.positions import format_lsn

TABLES = ("customers", "orders")
POSITION = 5000
CEILING = 6000
IDENTITY = 1000  # the consistent point recorded when this project created the slot


def facts(
    *,
    exists: bool = True,
    active: int | None = None,
    confirmed: int | None = None,
    position: int | None = None,
    ceiling: int | None = None,
    created: bool = False,
    identity: int | None = None,
    invalidated: str | None = None,
    **rest: Any,
) -> StartFacts:
    state = SlotState(exists, active, confirmed, "pgoutput" if exists else None, invalidated)
    if not exists:
        assert active is None and confirmed is None
    return StartFacts(
        slot="riverbed_test",
        state=state,
        position=position,
        ceiling=ceiling,
        created=created,
        identity=identity,
        tables=rest.pop("tables", TABLES),
        **rest,
    )


FRESH = StartPlan(copy=TABLES)  # a new slot, every table copied through its snapshot
START_OVER = StartPlan(drop_slot=True, forget_lake=True, copy=TABLES)
RESNAPSHOT_NO_SLOT = StartPlan(forget_lake=True, copy=TABLES)
RESUME = StartPlan(resume_at=POSITION)
# this project's slot, as the stream left it: confirmed to the lake's position, every table
# copied
OURS = {
    "confirmed": POSITION,
    "position": POSITION,
    "ceiling": CEILING,
    "snapshotted": frozenset(TABLES),
}
# a first snapshot cut short: the slot this project created, nothing confirmed to it
CUT_SHORT = {"confirmed": IDENTITY, "created": True, "identity": IDENTITY}
# a slot confirmed past anything this project confirmed (dropped and created again since)
REPLACED = {"confirmed": CEILING + 1, "position": POSITION, "ceiling": CEILING}

ROWS: list[tuple[str, dict[str, Any], StartPlan | Refusal]] = [
    # a slot another capture streams from, whatever else holds
    ("in use", {"active": 42, **OURS}, Refusal.IN_USE),
    ("in use, --resnapshot --force", {"active": 42, **OURS, "resnapshot": True, "force": True},
     Refusal.IN_USE),
    ("in use, cut short", {"active": 42, **CUT_SHORT}, Refusal.IN_USE),
    # no slot
    ("fresh start", {"exists": False}, FRESH),
    ("fresh start, created before (slot dropped mid-snapshot)",
     {"exists": False, "created": True, "identity": IDENTITY}, FRESH),
    ("fresh start, a snapshot cut short in the lake (its slot dropped since)",
     {"exists": False, "created": True, "identity": IDENTITY,
      "snapshotted": frozenset({"customers"}), "in_lake": frozenset({"customers"})},
     RESNAPSHOT_NO_SLOT),
    ("fresh start, another slot's files in the lake (source.slot changed)",
     {"exists": False, "in_lake": frozenset(TABLES)}, RESNAPSHOT_NO_SLOT),
    ("slot gone", {"exists": False, "position": POSITION, "ceiling": CEILING}, Refusal.GONE),
    ("slot gone, --resnapshot", {"exists": False, "position": POSITION, "resnapshot": True},
     RESNAPSHOT_NO_SLOT),
    ("no slot, --resnapshot", {"exists": False, "resnapshot": True}, RESNAPSHOT_NO_SLOT),
    ("no slot, --resnapshot --force", {"exists": False, "resnapshot": True, "force": True},
     RESNAPSHOT_NO_SLOT),
    # a slot, no position: a first snapshot cut short, or someone else's
    ("cut short", CUT_SHORT, START_OVER),
    ("cut short, identity not recorded", {**CUT_SHORT, "identity": None}, START_OVER),
    ("cut short, slot not confirmed at all", {**CUT_SHORT, "confirmed": None}, START_OVER),
    ("cut short, --resnapshot", {**CUT_SHORT, "resnapshot": True}, START_OVER),
    ("created here but recreated since", {**CUT_SHORT, "confirmed": IDENTITY + 1},
     Refusal.FOREIGN),
    ("foreign", {"confirmed": IDENTITY}, Refusal.FOREIGN),
    ("foreign, --force alone", {"confirmed": IDENTITY, "force": True}, Refusal.FOREIGN),
    ("foreign, --resnapshot", {"confirmed": IDENTITY, "resnapshot": True},
     Refusal.NOT_OURS_TO_DROP),
    ("foreign, --resnapshot --force", {"confirmed": IDENTITY, "resnapshot": True, "force": True},
     START_OVER),
    # a slot and a position
    ("resume", OURS, RESUME),
    ("resume, slot behind the lake", {**OURS, "confirmed": POSITION - 100}, RESUME),
    ("resume, slot at the ceiling", {**OURS, "confirmed": CEILING}, RESUME),
    ("resume, slot never confirmed", {**OURS, "confirmed": None}, RESUME),
    ("resume, no ceiling recorded (an earlier release)",
     {**OURS, "ceiling": None, "confirmed": CEILING * 10}, RESUME),
    ("resume, slot past the ceiling but not the position",
     {**OURS, "ceiling": POSITION - 100, "confirmed": POSITION}, RESUME),
    ("resume, --force alone", {**OURS, "force": True}, RESUME),
    ("resume, --resnapshot", {**OURS, "resnapshot": True}, START_OVER),
    ("replaced", REPLACED, Refusal.REPLACED),
    ("invalidated", {**OURS, "invalidated": "wal_removed"}, Refusal.INVALIDATED),
    ("invalidated, --resnapshot", {**OURS, "invalidated": "wal_removed", "resnapshot": True},
     START_OVER),
    ("replaced, --force alone", {**REPLACED, "force": True}, Refusal.REPLACED),
    ("replaced, --resnapshot", {**REPLACED, "resnapshot": True}, Refusal.NOT_OURS_TO_DROP),
    ("replaced, --resnapshot --force", {**REPLACED, "resnapshot": True, "force": True},
     START_OVER),
]  # fmt: skip


@pytest.mark.parametrize(("given", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_the_start_plan(given: dict[str, Any], expected: StartPlan | Refusal) -> None:
    plan = plan_start(facts(**given))
    if isinstance(expected, Refusal):
        assert plan == StartPlan(refuse=expected)
    else:
        assert plan == expected


# resuming, the tables: which snapshot records are forgotten, which tables are copied
TABLE_ROWS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("every table copied and published", {"snapshotted": {"customers", "orders"}}, {}),
    ("a table new to the capture", {"snapshotted": {"customers"}}, {"copy": ("orders",)}),
    ("a table back in the capture, its old rows in the lake",
     {"snapshotted": {"customers"}, "in_lake": {"customers", "orders"}},
     {"copy": ("orders",), "stale": ("orders",)}),
    ("a table the publication lost (dropped and created again)",
     {"snapshotted": {"customers", "orders"}, "unpublished": {"orders"},
      "in_lake": {"customers", "orders"}},
     {"forget_unpublished": ("orders",), "copy": ("orders",), "stale": ("orders",)}),
    ("a table the publication lost, never copied",
     {"snapshotted": {"customers"}, "unpublished": {"orders"}}, {"copy": ("orders",)}),
    ("the publication lost every table", {"snapshotted": {"customers", "orders"},
     "unpublished": {"customers", "orders"}},
     {"forget_unpublished": TABLES, "copy": TABLES}),
    ("tables out of the capture",
     {"snapshotted": {"customers", "orders", "refunds", "archive"}, "in_lake": {"refunds"}},
     {"forget_uncaptured": ("archive", "refunds")}),
    ("copied in the captured tables' order",
     {"tables": ("a", "b", "c", "d"), "snapshotted": {"b"}, "unpublished": {"c"}},
     {"copy": ("a", "c", "d")}),
    ("nothing copied yet", {"snapshotted": set()}, {"copy": TABLES}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"), [r[1:] for r in TABLE_ROWS], ids=[r[0] for r in TABLE_ROWS]
)
def test_the_tables_resuming_copies_and_forgets(
    given: dict[str, Any], expected: dict[str, Any]
) -> None:
    sets = {k: frozenset(v) if isinstance(v, set) else v for k, v in given.items()}
    assert plan_start(facts(**{**OURS, **sets})) == StartPlan(resume_at=POSITION, **expected)


@pytest.mark.parametrize(
    "given",
    [
        {"exists": False},
        CUT_SHORT,
        {**OURS, "resnapshot": True},
        {"confirmed": IDENTITY, "resnapshot": True, "force": True},
    ],
    ids=["fresh start", "cut short", "--resnapshot", "foreign, --resnapshot --force"],
)
def test_a_snapshot_through_a_new_slot_copies_every_table_and_forgets_no_single_one(
    given: dict[str, Any],
) -> None:
    """The tables' records do not matter when the slot is new: every table is copied, and the
    records go with the slot (forget_lake) or were never there."""
    records = {
        "snapshotted": frozenset({"customers", "gone"}),
        "unpublished": frozenset({"orders"}),
        "in_lake": frozenset(TABLES),
    }
    plan = plan_start(facts(**{**given, **records}))
    assert plan.copy == TABLES and not plan.resumes
    assert plan.forget_unpublished == plan.forget_uncaptured == plan.stale == ()


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"active": 42, **OURS}, ["in use by server process 42", "another capture"]),
        ({"exists": False, "position": POSITION}, ["no longer exists", format_lsn(POSITION),
                                                   "--resnapshot"]),
        (REPLACED, ["not the one this lake was captured through", format_lsn(CEILING + 1),
                    format_lsn(POSITION), "--resnapshot"]),
        ({"confirmed": IDENTITY}, ["this project did not create it", "--resnapshot --force"]),
        ({**REPLACED, "resnapshot": True}, ["--resnapshot leaves it alone", "--force"]),
        ({**OURS, "invalidated": "wal_removed"},
         ["invalidated", "wal_removed", "max_slot_wal_keep_size", format_lsn(POSITION),
          "--resnapshot"]),
    ],
    ids=["in use", "gone", "replaced", "foreign", "not ours to drop", "invalidated"],
)  # fmt: skip
def test_a_refusal_names_the_slot_and_the_fix(given: dict[str, Any], words: list[str]) -> None:
    start = facts(**given)
    plan = plan_start(start)
    assert plan.refuse is not None
    message = str(refusal(plan, start))
    for word in ["'riverbed_test'", *words]:
        assert word in message, message
