"""The PII hook's digests are HMAC-SHA256 as Python's hmac module computes it, whatever the key."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
import pytest

from riverbed.transform.pii import protect

VALUES = ["ann@example.com", "", "é€ 𝄞", "a'b\"c\\d", "x" * 5000, None, "ann@example.com"]
KEYS = [b"k", b"0123456789abcdef" * 4, b"z" * 65, "ключ".encode(), bytes(range(64))]


def expected(key: bytes, value: object, method: str) -> str | None:
    if value is None:
        return None
    digest = hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()
    return digest if method == "hash" else "tok_" + digest[:16]


@pytest.mark.parametrize("key", KEYS, ids=["short", "block", "long", "utf8", "bytes"])
@pytest.mark.parametrize("method", ["hash", "tokenize"])
def test_digests_are_hmac_sha256_of_the_text(key: bytes, method: str) -> None:
    many = VALUES + [f"user{i}@example.com" for i in range(20_000)]  # several chunks
    table = pa.table({"id": range(len(many)), "email": pa.array(many, pa.string())})
    out = protect(table, {"email": method, "missing": "hash"}, key)
    assert out.column("id").equals(table.column("id"))
    assert out.column("email").to_pylist() == [expected(key, v, method) for v in many]


def test_other_types_are_digested_from_their_text_and_mask_is_left_alone() -> None:
    table = pa.table({"n": pa.array([7, None, -1], pa.int64()), "name": ["a", "b", None]})
    out = protect(table, {"n": "hash", "name": "mask"}, b"key")
    assert out.column("n").to_pylist() == [expected(b"key", v, "hash") for v in [7, None, -1]]
    assert out.schema.field("n").type == pa.string()
    assert out.column("name").equals(table.column("name"))


def test_an_empty_or_all_null_column() -> None:
    empty = pa.table({"e": pa.array([], pa.string())})
    assert protect(empty, {"e": "hash"}, b"k").num_rows == 0
    nulls = pa.table({"e": pa.array([None, None], pa.string())})
    assert protect(nulls, {"e": "tokenize"}, b"k").column("e").to_pylist() == [None, None]
