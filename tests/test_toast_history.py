"""Unchanged-TOAST resolution against a cut-down history gives what the whole history gives.

The transform resolves a batch's unchanged-TOAST marks from the raw history before it; it keeps
only the rows resolution needs (transform.read.latest_values). Random histories of inserts,
updates with and without marks, deletes, re-inserts and key-changing updates: the batch's rows
resolve to the same values and marks either way; and walking only the rows of the keys that
marked rows read gives what walking every row gives."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from riverbed.lake.reader import _resolve_rows, resolve_unchanged_toast
from riverbed.transform.read import latest_values

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("body", pa.string()),
        ("note", pa.string()),
        ("price", pa.int64()),
        ("_op", pa.string()),
        ("_lsn", pa.int64()),
        ("_seq", pa.int64()),
        ("_toast_unchanged", pa.list_(pa.string())),
    ]
)


@st.composite
def changes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Source-order changes to a few keys, as capture writes them (marks as pgoutput sends)."""
    rows: list[dict[str, Any]] = []
    live: dict[int, bool] = {}
    lsn = 0
    for _ in range(draw(st.integers(1, 40))):
        lsn += 1
        key = draw(st.integers(0, 4))
        body, note, price = f"b{lsn}", f"n{lsn}", lsn
        if not live.get(key):
            rows.append(row(key, body, note, price, "I", lsn, 0, None))
            live[key] = True
            continue
        kind = draw(st.sampled_from(["update", "update", "marked", "delete", "rekey"]))
        if kind == "delete":
            rows.append(row(key, None, None, None, "D", lsn, 0, None))
            live[key] = False
        elif kind == "rekey" and not live.get(key + 10):
            marks = draw(st.sampled_from([["body"], ["body", "note"]]))
            rows.append(row(key, None, None, None, "D", lsn, 0, None))
            rows.append(
                row(key + 10, None, None if "note" in marks else note, price, "I", lsn, 1, marks)
            )
            live[key], live[key + 10] = False, True
        else:
            marks = draw(st.sampled_from([None, ["body"], ["note"], ["body", "note"]]))
            if kind == "update":
                marks = None
            rows.append(
                row(
                    key,
                    None if marks and "body" in marks else body,
                    None if marks and "note" in marks else note,
                    price,
                    "U",
                    lsn,
                    0,
                    marks,
                )
            )
    return rows


def row(
    key: int, body: Any, note: Any, price: Any, op: str, lsn: int, seq: int, marks: Any
) -> dict[str, Any]:
    return {
        "id": key,
        "body": body,
        "note": note,
        "price": price,
        "_op": op,
        "_lsn": lsn,
        "_seq": seq,
        "_toast_unchanged": marks,
    }


@settings(max_examples=300, deadline=None)
@given(changes(), st.data())
def test_cut_down_history_resolves_like_the_whole(rows: list[dict[str, Any]], data: Any) -> None:
    split = data.draw(st.integers(0, len(rows)))
    while 0 < split < len(rows) and rows[split]["_seq"] == 1:
        split -= 1  # a key-changing update's two rows stay in one batch, as capture writes them
    history = pa.Table.from_pylist(rows[:split], SCHEMA)
    batch = pa.Table.from_pylist(rows[split:], SCHEMA)
    if batch.num_rows == 0:
        return
    whole = resolve_unchanged_toast(pa.concat_tables([history, batch]), ["id"])
    expected = whole.slice(history.num_rows).to_pylist()
    history = history.combine_chunks()
    cut = latest_values(history, ["id"], ["body", "note"]) if history.num_rows else history
    assert cut.num_rows <= history.num_rows
    resolved = resolve_unchanged_toast(pa.concat_tables([cut, batch]), ["id"])
    assert resolved.slice(cut.num_rows).to_pylist() == expected


@settings(max_examples=300, deadline=None)
@given(changes())
def test_walking_only_the_keys_marks_read_resolves_like_walking_every_row(
    rows: list[dict[str, Any]],
) -> None:
    table = pa.Table.from_pylist(rows, SCHEMA)
    expected = table
    if table.num_rows:
        walked = _resolve_rows(table, ["id"])
        for name in walked.column_names:
            index = table.column_names.index(name)
            expected = expected.set_column(index, table.schema.field(name), walked.column(name))
    assert resolve_unchanged_toast(table, ["id"]).to_pylist() == expected.to_pylist()


def test_a_long_history_of_marked_updates_keeps_two_rows_per_key() -> None:
    rows = [row(1, "long text", "n", 1, "I", 1, 0, None)]
    rows += [row(1, None, "n", p, "U", p, 0, ["body"]) for p in range(2, 1000)]
    cut = latest_values(pa.Table.from_pylist(rows, SCHEMA), ["id"], ["body"])
    assert cut.column("_lsn").to_pylist() == [1, 999]
    batch = pa.Table.from_pylist([row(1, None, "n", 5, "U", 1000, 0, ["body"])], SCHEMA)
    resolved = resolve_unchanged_toast(pa.concat_tables([cut, batch]), ["id"])
    assert resolved.to_pylist()[-1]["body"] == "long text"
    assert resolved.to_pylist()[-1]["_toast_unchanged"] is None
