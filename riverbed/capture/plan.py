"""How `riverbed capture` starts: the decision, apart from the I/O that gathers its facts and
carries it out (runner.run_capture).

The facts are the replication slot as the source shows it, what the state store recorded
about it (the lake's position through it, the ceiling it may have been confirmed to, whether
this project created it and its consistent point then), the captured tables, and the flags.
The plan says whether to refuse (and why), whether to drop the slot and forget the lake, which
snapshot records to forget, which tables to copy, and where streaming resumes.

The rules:

* a slot another capture streams from is refused;
* ``--resnapshot`` drops the slot and forgets everything the project's slots captured (the
  fresh snapshot replaces the whole lake), but leaves a slot this lake does not know alone
  (foreign or replaced, below) unless ``--force`` is given;
* no slot and no position: a fresh start, the first snapshot through a new slot; whatever the
  lake holds already (a first snapshot cut short whose slot was dropped since, or files of an
  earlier slot: source.slot changed) is forgotten first, as the snapshot replaces it;
* a slot the server invalidated (``max_slot_wal_keep_size`` let it remove WAL the slot still
  needed) with a position: refused like a slot gone, naming ``--resnapshot``, which drops it;
* no slot but a position: the slot was dropped by someone, and the changes since the position
  are unrecoverable from the source: refused, naming how to start over;
* a slot but no position: a first snapshot cut short (killed mid-copy; its exported snapshot
  died with the process, so a consistent copy is impossible) is dropped and started over, with
  every file captured through it, only when this project created that slot (recorded before
  creating it, and still at the consistent point recorded right after). A slot of that name it
  did not create is foreign: another project's or tool's, refused;
* a slot and a position: resume there, unless the slot was confirmed past anything this
  project can have confirmed to it (replaced: dropped and created again, or read by another
  project), which is refused. Resuming, captured tables the publication lost (dropped and
  created again, or taken out of it) and tables new to the capture are copied from a snapshot
  of their own; tables out of the capture are forgotten, so they are copied anew if they return.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from riverbed.capture.slot import (
    CaptureSetupError,
    SlotState,
    slot_gone,
    slot_in_use,
    slot_invalidated,
    slot_is_past,
    slot_replaced,
)


class Refusal(enum.Enum):
    IN_USE = "another capture streams from the slot"
    NOT_OURS_TO_DROP = "--resnapshot without --force on a slot the lake does not know"
    FOREIGN = "a slot this project did not create"
    REPLACED = "a slot confirmed past the lake"
    GONE = "the slot the lake was captured through is gone"
    INVALIDATED = "the server invalidated the slot (WAL it needed removed)"


@dataclass(frozen=True)
class StartFacts:
    slot: str
    state: SlotState  # the slot as the source shows it, once no lag measurement peeks at it
    position: int | None  # the lake's position through the slot
    ceiling: int | None  # how far the slot may have been confirmed (None: not recorded)
    created: bool  # this project recorded creating (or beginning to create) the slot
    identity: int | None  # the slot's consistent point when this project created it
    tables: tuple[str, ...]  # the captured tables
    snapshotted: frozenset[str] = frozenset()  # tables whose snapshot copy is recorded
    unpublished: frozenset[str] = frozenset()  # captured tables the publication lacks
    in_lake: frozenset[str] = frozenset()  # tables with raw files in the lake
    resnapshot: bool = False
    force: bool = False


@dataclass(frozen=True)
class StartPlan:
    refuse: Refusal | None = None
    drop_slot: bool = False  # the slot there is dropped before the snapshot
    forget_lake: bool = False  # every file the project's slots captured is forgotten and deleted
    # snapshot records forgotten BEFORE the publication gets the tables back: a crash in
    # between must not leave them looking copied
    forget_unpublished: tuple[str, ...] = ()
    forget_uncaptured: tuple[str, ...] = ()  # snapshot records of tables out of the capture
    resume_at: int | None = None  # None: a new slot, through whose snapshot ``copy`` is copied
    copy: tuple[str, ...] = ()  # resuming: copied from a snapshot of their own (a backfill)
    stale: tuple[str, ...] = ()  # of ``copy``: in the lake already, ended by a T row first

    @property
    def resumes(self) -> bool:
        return self.resume_at is not None


def plan_start(facts: StartFacts) -> StartPlan:
    """What `riverbed capture` does, given ``facts`` (the module docstring's rules)."""
    state, position = facts.state, facts.position
    if state.active_pid:
        return StartPlan(refuse=Refusal.IN_USE)
    foreign = state.exists and position is None and not created_here(facts)
    replaced = (
        state.exists and position is not None and slot_is_past(state, position, facts.ceiling)
    )
    if facts.resnapshot:
        if (foreign or replaced) and not facts.force:
            return StartPlan(refuse=Refusal.NOT_OURS_TO_DROP)
        return StartPlan(drop_slot=state.exists, forget_lake=True, copy=facts.tables)
    if not state.exists:
        if position is not None:
            return StartPlan(refuse=Refusal.GONE)
        # a first snapshot cut short whose slot is gone since, or files of an earlier slot
        # (source.slot changed): the new snapshot replaces them, or its rows would be doubled
        return StartPlan(forget_lake=bool(facts.in_lake or facts.snapshotted), copy=facts.tables)
    if state.invalidated and position is not None:
        return StartPlan(refuse=Refusal.INVALIDATED)
    if position is None:
        if foreign:
            return StartPlan(refuse=Refusal.FOREIGN)
        return StartPlan(drop_slot=True, forget_lake=True, copy=facts.tables)  # cut short
    if replaced:
        return StartPlan(refuse=Refusal.REPLACED)
    return _resume(facts, position)


def _resume(facts: StartFacts, position: int) -> StartPlan:
    lost = [t for t in facts.tables if t in facts.unpublished]
    kept = facts.snapshotted - set(lost)
    copy = tuple(t for t in facts.tables if t not in kept)
    return StartPlan(
        forget_unpublished=tuple(t for t in lost if t in facts.snapshotted),
        forget_uncaptured=tuple(sorted(kept - set(facts.tables))),
        resume_at=position,
        copy=copy,
        stale=tuple(t for t in copy if t in facts.in_lake),
    )


def created_here(facts: StartFacts) -> bool:
    """Whether the slot (there, with no position: a first snapshot cut short) is the one this
    project created: recorded before creating it, and still at the consistent point recorded
    right after (nothing confirms a position to it before the snapshot ends)."""
    if not facts.created:
        return False
    return facts.identity is None or facts.state.confirmed_lsn in (None, facts.identity)


def refusal(plan: StartPlan, facts: StartFacts) -> CaptureSetupError:
    """The error ``plan`` refuses to start with, naming the fix."""
    slot, state, position = facts.slot, facts.state, facts.position
    if plan.refuse is Refusal.IN_USE:
        assert state.active_pid is not None
        return slot_in_use(slot, state.active_pid)
    if plan.refuse is Refusal.GONE:
        assert position is not None
        return slot_gone(slot, position)
    if plan.refuse is Refusal.INVALIDATED:
        assert position is not None and state.invalidated is not None
        return slot_invalidated(slot, position, state.invalidated)
    if plan.refuse is Refusal.REPLACED:
        assert position is not None and state.confirmed_lsn is not None
        return slot_replaced(slot, position, state.confirmed_lsn)
    if plan.refuse is Refusal.FOREIGN:
        return CaptureSetupError(
            f"replication slot {slot!r} exists, but this project did not create it "
            "(another project or tool may be reading from it); set source.slot to "
            "another name, or, if it is unused, drop it (`riverbed capture --once "
            "--resnapshot --force` drops it and snapshots afresh)"
        )
    assert plan.refuse is Refusal.NOT_OURS_TO_DROP
    return CaptureSetupError(
        f"replication slot {slot!r} is not one this project's lake knows (this "
        "project did not create it, or it was dropped and created again since; "
        "another project or tool may be reading from it: two project folders with "
        "the same source.slot?), so --resnapshot leaves it alone; set "
        "source.slot and source.publication in riverbed.yaml to names of this "
        "project's own, or, if nothing else uses the slot, add --force to drop it"
    )
