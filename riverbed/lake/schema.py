"""The columns every row in the lake carries besides its source columns, and their types.

Every raw row holds the source columns (typed by ``riverbed.lake.pgtypes``) plus the CDC columns:

  _op               I insert, U update, D delete, T truncate (one row per truncated table),
                    L snapshot (full load) row, or I for snapshot rows when
                    capture.include_op_for_full_load is set (the DMS convention)
  _commit_ts        commit time of the source transaction (UTC); the snapshot's time for L rows
  _lsn              commit LSN of the transaction (the slot's consistent point for snapshot rows)
  _seq              position of the change within its transaction, from 0; for snapshot rows a
                    negative row number, so they sort before a transaction that committed at
                    the consistent point itself
  _xid              source transaction id (null for snapshot rows)
  _toast_unchanged  names of columns whose value the source did NOT send because an update left
                    a TOASTed value untouched. Those columns are null in this row and must be
                    read as "same as the previous version of this key", never as null. This is
                    decided at capture, because only the decoder can tell an unchanged TOAST
                    value ('u') from a real NULL ('n'); ``riverbed.lake.reader`` resolves the
                    mark for every later stage.

Staged rows keep them; a quarantined row adds the rule it failed and why.
"""

from __future__ import annotations

import pyarrow as pa

OP = "_op"
COMMIT_TS = "_commit_ts"
LSN = "_lsn"
SEQ = "_seq"
XID = "_xid"
TOAST_UNCHANGED = "_toast_unchanged"

CDC_FIELDS = [
    pa.field(OP, pa.string(), nullable=False),
    pa.field(COMMIT_TS, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(LSN, pa.int64(), nullable=False),
    pa.field(SEQ, pa.int64(), nullable=False),
    pa.field(XID, pa.int64()),
    pa.field(TOAST_UNCHANGED, pa.list_(pa.string())),
]
CDC_COLUMNS = tuple(f.name for f in CDC_FIELDS)

POSITION_COLUMNS = (LSN, SEQ)  # a change's place in the source: unique within a table
EVENT_COLUMNS = (OP, COMMIT_TS, *POSITION_COLUMNS)  # what a change adds to a row's values

RULE = "_rule"  # a quarantined row: the quality rule it failed
REASON = "_reason"  # and why
