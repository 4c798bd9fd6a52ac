"""Reading lake files by key: the row groups a RowGroupFilter keeps hold every row with one of
the keys asked for, and, for files in key order, little else."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from riverbed.lake.reader import RowGroupFilter


def parquet_of(table: pa.Table, group_rows: int) -> pq.ParquetFile:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=group_rows)
    buffer.seek(0)
    return pq.ParquetFile(buffer)


def matching(table: pa.Table, column: str, values: pa.Array) -> list[dict[str, Any]]:
    return table.filter(pc.is_in(table.column(column), value_set=values)).to_pylist()


KEYS = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(-50, 50)), min_size=1, max_size=60),
    st.lists(st.one_of(st.none(), st.text("abc", max_size=3)), min_size=1, max_size=60),
)


@settings(max_examples=200, deadline=None)
@given(KEYS, st.data(), st.integers(1, 9), st.booleans())
def test_kept_groups_hold_every_row_asked_for(
    keys: list[Any], data: st.DataObject, group_rows: int, in_order: bool
) -> None:
    if in_order:
        keys = sorted(keys, key=lambda k: (k is None, k))
    table = pa.table({"k": keys, "n": list(range(len(keys)))})
    if table.column("k").type == pa.null():  # only NULL keys: a group without min/max
        table = table.cast(pa.schema([("k", pa.int64()), ("n", pa.int64())]))
    kind = table.column("k").type
    present = [k for k in keys if k is not None]
    # keys the file holds, and some it may not
    others = st.integers(-60, 60) if pa.types.is_integer(kind) else st.text("abcd", max_size=3)
    asked = data.draw(st.lists(st.sampled_from(present) if present else others, max_size=5))
    asked += data.draw(st.lists(others, max_size=2))
    values = pa.array([*asked, None], kind)
    parquet = parquet_of(table, group_rows)
    kept = RowGroupFilter([("k", values)]).groups(parquet)
    read = parquet.read_row_groups(kept)
    wanted = values.drop_null()  # a NULL key refers to nothing
    assert matching(read, "k", wanted) == matching(table, "k", wanted)


def test_a_file_in_key_order_is_read_where_the_keys_are() -> None:
    table = pa.table({"id": list(range(10_000)), "v": ["x"] * 10_000})
    parquet = parquet_of(table, 1_000)
    assert RowGroupFilter([("id", pa.array([9_998, 9_999]))]).groups(parquet) == [9]
    assert RowGroupFilter([("id", pa.array([5, 5_005]))]).groups(parquet) == [0, 5]
    assert RowGroupFilter([("id", pa.array([20_000]))]).groups(parquet) == []
    # a column this file does not have (a later schema's), or values that do not compare
    # with its statistics: every group
    assert RowGroupFilter([("other", pa.array([1]))]).groups(parquet) == list(range(10))
    assert RowGroupFilter([("id", pa.array(["7"]))]).groups(parquet) == list(range(10))
