"""Erasure, the right to be forgotten: `riverbed forget TABLE KEY` removes a data subject's
personal values (riverbed.config.personal says which columns) from every copy Riverbed keeps.

The order, each step safe to be killed after, a rerun completing what a kill left:

1. ``begin``: the request is recorded in the state store (store.erasure) before anything is
   erased. From then on it is also a tombstone: the transform nulls the key's personal
   columns in every change it stages later, so a change captured from the source (which
   still holds the values until the application erases them there) cannot bring them back.
2. ``erase_lake``: every lake file holding the key's rows with a personal value (raw, staged,
   quarantine, and the unreadable raw files set aside in bad/ when they can be read after all)
   is rewritten in place: the scrubbed file is written beside it and renamed over it (one
   PUT on S3), then its new size is recorded in the manifest. In place, not under a new
   name: a raw file's path is its identity in the transform's bookmarks and batch records,
   and a renamed one would be taken for new. A reader sees the old file or the new one,
   whole; a kill leaves either, and the rerun finds the old one still holding the key. A
   file already scrubbed is not written again. The table's compacted current rows and TOAST
   history (riverbed.transform.compacted), derived from its staged and raw files, are
   deleted: the transform builds them again from the scrubbed files.
3. the warehouse (riverbed.load.erase): every version of the key in the dimension keeps its
   row (history stays: effective dates, keys, the other columns) with its personal columns
   NULL, as do the staging tables and any fact carrying personal columns and the key; then
   the warehouse file is compacted so the old values leave its freed blocks.
4. ``finish``: the state store's file is compacted too (VACUUM), the request marked done, and
   the change audited (action ``forget``, the table and keys: never the values).

Erased means NULL, whatever the column's type (see riverbed.lake.scrub). What stays: the
key itself (it names the subject, and the tombstone needs it), hashed columns' digests are
erased like any value, and the audit trail is never rewritten (a principal's query that
named a value keeps its text: it is evidence, hash-chained). The file system may keep the
blocks a replaced file freed until it reuses them; encrypting the lake (keys rotated) is the
way past that.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from riverbed.config.models import RiverbedConfig
from riverbed.config.personal import Scrub, no_personal_columns, scrubs
from riverbed.errors import UsageError
from riverbed.govern.audit import record_change
from riverbed.lake.scrub import drop_compacted, scrub_file
from riverbed.lake.storage import LakeStorage
from riverbed.observe.logs import log_event
from riverbed.state.store import StateStore

log = logging.getLogger("riverbed.govern")
LAKE_STAGES = ("raw", "staged", "quarantine")


@dataclass
class LakeErased:
    """What ``erase_lake`` did: files rewritten and the rows scrubbed in them, and the
    set-aside files it could not read (so could not search)."""

    files: int = 0
    rows: int = 0
    unreadable: list[str] = field(default_factory=list)


def check_keys(config: RiverbedConfig, table: str, keys: Sequence[str]) -> list[str]:
    """The keys `riverbed forget` was given, checked: a table in config with personal
    columns, and each key with one value per key column (joined by ',')."""
    config.require_table(table, "forget")
    if not scrubs(config, table):
        raise UsageError(no_personal_columns(config, table))
    columns = config.tables[table].keys
    for key in keys:
        if len(key.split(",")) != len(columns):
            raise UsageError(
                f"forget {table} {key}: {table}'s key is {', '.join(columns)}; give "
                f"{len(columns)} value(s) joined by ',' (e.g. {','.join('1' for _ in columns)})"
            )
    return list(dict.fromkeys(keys))


def begin(
    store: StateStore, config: RiverbedConfig, table: str, keys: Sequence[str]
) -> dict[str, list[str]]:
    """Record the erasure of ``keys`` of ``table``; every erasure under way (these, and any a
    kill interrupted before) of a table still in config, by table."""
    store.erasure.request(table, keys)
    pending: dict[str, list[str]] = {}
    for tombstone in store.erasure.tombstones():
        if not tombstone.done and tombstone.table in config.tables:
            pending.setdefault(tombstone.table, []).append(tombstone.key)
    return pending


def erase_lake(
    storage: LakeStorage, store: StateStore, config: RiverbedConfig, table: str, keys: list[str]
) -> LakeErased:
    """Scrub ``keys`` of ``table`` from every lake file that holds them (module docstring, 2)."""
    done = LakeErased()
    for found in scrubs(config, table):
        for stage in LAKE_STAGES:
            for file in store.lake.files(stage, found.table):
                size = _scrub(storage, file.path, found, keys, done)
                if size is not None and size != file.bytes:
                    store.lake.resized(file.path, size)
        for bad in store.transform.bad_files():  # set aside, so in no manifest record
            if bad.table == found.table and storage.exists(bad.moved_to):
                _scrub(storage, bad.moved_to, found, keys, done)
        drop_compacted(storage, found.table)
    return done


def _scrub(
    storage: LakeStorage, path: str, found: Scrub, keys: list[str], done: LakeErased
) -> int | None:
    """Scrub one file, counted in ``done``: its size, or None when it does not hold the key
    or cannot be read (a raw file the transform has yet to set aside: listed as unreadable)."""
    try:
        scrubbed = scrub_file(storage, path, found.columns, found.match, keys)
    except pa.ArrowException:
        done.unreadable.append(path)
        return None
    if scrubbed is None:
        return None
    size, rows = scrubbed
    done.files += 1 if rows else 0
    done.rows += rows
    return size


def finish(
    store: StateStore, table: str, keys: list[str], lake: LakeErased, warehouse_rows: int
) -> None:
    """Compact the state store, mark the erasure done and audit it (module docstring, 4)."""
    store.erasure.compact()
    store.erasure.complete(table, keys)
    record_change(
        store,
        principal=getpass.getuser(),
        action="forget",
        detail={
            "table": table,
            "keys": keys,
            "lake_files": lake.files,
            "lake_rows": lake.rows,
            "warehouse_rows": warehouse_rows,
        },
    )
    log_event(
        log,
        "forgotten",
        f"{table}: {len(keys)} key(s) erased ({lake.files} lake file(s) rewritten, "
        f"{warehouse_rows} warehouse row(s) scrubbed)",
        table=table,
        keys=len(keys),
        lake_files=lake.files,
        warehouse_rows=warehouse_rows,
    )
