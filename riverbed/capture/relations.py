"""Which table shape a row is decoded with: the stream's, or its streamed transaction's own.

pgoutput sends a table's Relation message before the first change of that table it sends
while its cache entry (``RelationSyncEntry``) has not sent one (``maybe_send_schema``). Outside
streaming that is tracked once per entry (``schema_sent``). Inside a streamed transaction it is
tracked per entry and top-level transaction (``streamed_txns``): each streamed transaction that
touches the table gets a Relation message of its own, in its own block, with its own catalog
view: after its own ``ALTER TABLE ... ADD COLUMN``, columns no other transaction has (yet, or
ever, when it aborts). At its Stream Commit the server takes the streamed Relation as the one
the receiver now has (``cleanup_rel_sync_cache`` sets ``schema_sent``: the next ordinary
transaction on the table gets no Relation message of its own); at its Stream Abort it only
forgets the transaction. A catalog change invalidates the entry, and every transaction,
streamed or not, then gets a fresh Relation message.

So a Relation message inside a streamed block belongs to that transaction alone
(:class:`RelationOverlay`, one per open streamed transaction): its rows are decoded with it;
a schema version it brings is recorded only at its Stream Commit, from the commit's LSN and
in the batch that holds its rows, as the Relation message of an ordinary transaction is
recorded with that transaction; with the commit it becomes the stream's. A Stream Abort of the
whole transaction drops it with the transaction's rows. The binary-mode check (binary_mode)
is scoped the same way: a column Riverbed cannot read in binary, in a streamed transaction's
Relation message, switches the stream to text at its Stream Commit (the server streams the
transaction again, in text), never because of one that aborts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from riverbed.capture.binary_mode import TextModeNeeded
from riverbed.capture.changes import TableSchema
from riverbed.capture.pgoutput import Relation
from riverbed.lake.pgtypes import PgColumn
from riverbed.state import SchemaVersion

# a relid's Relation message, the lake schema version its rows go to, its snapshot's LSN
Entry = tuple[Relation, TableSchema, int]


def table_schema(
    relation: Relation,
    current: TableSchema | None,
    keys: Iterable[str],
    type_names: dict[int, str],
) -> tuple[TableSchema, bool]:
    """The schema version ``relation`` describes, and whether it is new: ``current`` when its
    columns are the same, else the next version (the first without ``current``)."""
    key_names = set(keys) or {c.name for c in relation.columns if c.is_key}
    columns = tuple(
        PgColumn(c.name, c.type_oid, c.type_modifier, type_names.get(c.type_oid))
        for c in relation.columns
    )
    indexes = tuple(i for i, c in enumerate(columns) if c.name in key_names)
    version = current.version + 1 if current is not None else 1
    candidate = TableSchema(relation.name, version, columns, indexes)
    if current is not None and candidate.same_columns(current):
        return current, False
    return candidate, True


@dataclass
class RelationOverlay:
    """The Relation messages one open streamed transaction was sent, over the stream's."""

    entries: dict[int, Entry | None] = field(default_factory=dict)  # None: not captured
    schemas: dict[str, TableSchema] = field(default_factory=dict)  # lake table -> its version
    versions: list[TableSchema] = field(default_factory=list)  # new, recorded at its commit
    text_needed: TextModeNeeded | None = None  # a column it added, unreadable in binary

    def lookup(self, relid: int, relations: dict[int, Entry], ignored: set[int]) -> Entry | None:
        """The entry ``relid``'s rows of this transaction are decoded with (None: not ours)."""
        if relid in self.entries:
            return self.entries[relid]
        return None if relid in ignored else relations[relid]

    def promote(
        self,
        relations: dict[int, Entry],
        ignored: set[int],
        schemas: dict[str, TableSchema],
        first_lsn: int,
    ) -> list[SchemaVersion]:
        """The transaction committed at ``first_lsn``: its Relation messages become the
        stream's (the server sends them no more); the schema versions to record."""
        if self.text_needed is not None:
            raise self.text_needed
        for relid, entry in self.entries.items():
            if entry is None:
                ignored.add(relid)
            else:
                ignored.discard(relid)
                relations[relid] = entry
        schemas.update(self.schemas)
        return [SchemaVersion(s.table, s.version, s.describe(), first_lsn) for s in self.versions]
