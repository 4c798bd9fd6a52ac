"""The PII hook: keyed HMAC of personal data, so joins on it still work without revealing it.

``hash`` replaces a value with its HMAC-SHA256 (hex); ``tokenize`` with a short token
(``tok_`` + 16 hex digits) of the same HMAC. The same value and key always give the same
output, in every batch and on every engine (it runs here, over the engine's Arrow result, not in
engine SQL). ``mask`` and ``redact`` are applied at query time by governance, not here: the
warehouse keeps those columns so privileged principals can still read them.

The key is ``governance.pii_key`` (env var or file); without one, a random key is created once
in ``.riverbed/pii.key`` (mode 0600) so a laptop demo works and its tokens stay stable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from riverbed.config.loader import Project
from riverbed.errors import ConfigError
from riverbed.private import create_private, private_folders
from riverbed.transform.duckdb_engine import shared_database

TRANSFORM_METHODS = frozenset({"hash", "tokenize"})


def pii_key(project: Project) -> bytes:
    configured = project.config.governance.pii_key
    if configured is not None:
        try:
            return configured.reveal().encode()
        except ValueError as exc:
            raise ConfigError([f"governance.pii_key: {exc}"]) from None
    path = project.home / "pii.key"
    if not path.exists():
        private_folders(path.parent)
        fd = create_private(path)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return Path(path).read_text().strip().encode()


def protect(table: pa.Table, methods: dict[str, str], key: bytes) -> pa.Table:
    """Replace each column in ``methods`` (hash | tokenize) by its keyed digest; NULL stays NULL."""
    for name, method in methods.items():
        if method not in TRANSFORM_METHODS or name not in table.column_names:
            continue
        index = table.column_names.index(name)
        # digest each distinct value once: emails and names repeat across versions of a row
        encoded = pc.dictionary_encode(table.column(name).combine_chunks())
        values = digests(encoded.dictionary, method, key).take(encoded.indices)
        table = table.set_column(index, pa.field(name, pa.string()), values)
    return table


def digests(values: pa.Array, method: str, key: bytes) -> pa.Array:
    """The keyed digest of each value's text: HMAC-SHA256 in hex (``hash``), or ``tok_`` and
    its first 16 hex digits (``tokenize``); NULL stays NULL.

    Text is hashed by DuckDB, on every core and outside the GIL, written out as HMAC is
    defined (RFC 2104): sha256(key ^ opad || sha256(key ^ ipad || value)). Python's hmac
    module gives the same (tested) but one value at a time, a third of a second per 100,000
    values. Other types are digested from Python's str() of the value."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per value: no key setup each
        texts = [None if v is None else _digest(keyed, str(v), method) for v in values.to_pylist()]
        return pa.array(texts, pa.string())
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    digest = "sha256($outer || unhex(sha256($inner || encode(v))))"
    if method == "tokenize":
        digest = f"'tok_' || left({digest}, 16)"
    # record batches of a few thousand values: DuckDB scans them on all threads; a cursor of
    # the process's database, not a new database a call (15-30 ms, per personal column of
    # every batch)
    rows = pa.table({"v": values}).to_batches(max_chunksize=_CHUNK)
    with shared_database().cursor() as db:
        db.register("digest_input", pa.Table.from_batches(rows, pa.schema([("v", values.type)])))
        result = db.sql(
            f"select {digest} as d from digest_input",
            params={"inner": bytes(b ^ 0x36 for b in key), "outer": bytes(b ^ 0x5C for b in key)},
        ).to_arrow_table()
    return result.column("d").combine_chunks().cast(pa.string())


_BLOCK = 64  # SHA-256's block size in bytes: HMAC pads (or first hashes) its key to it
_CHUNK = 8192


def _digest(keyed: hmac.HMAC, value: str, method: str) -> str:
    mac = keyed.copy()
    mac.update(value.encode())
    digest = mac.hexdigest()
    return digest if method == "hash" else "tok_" + digest[:16]
