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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return Path(path).read_text().strip().encode()


def protect(table: pa.Table, methods: dict[str, str], key: bytes) -> pa.Table:
    """Replace each column in ``methods`` (hash | tokenize) by its keyed digest; NULL stays NULL."""
    for name, method in methods.items():
        if method not in TRANSFORM_METHODS or name not in table.column_names:
            continue
        index = table.column_names.index(name)
        column = table.column(name)
        # digest each distinct value once: emails and names repeat across versions of a row
        encoded = pc.dictionary_encode(column.combine_chunks())
        keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per value: no key setup each
        digests = [
            None if value is None else _digest(keyed, str(value), method)
            for value in encoded.dictionary.to_pylist()
        ]
        values = pa.array(digests, pa.string()).take(encoded.indices)
        table = table.set_column(index, pa.field(name, pa.string()), values)
    return table


def _digest(keyed: hmac.HMAC, value: str, method: str) -> str:
    mac = keyed.copy()
    mac.update(value.encode())
    digest = mac.hexdigest()
    return digest if method == "hash" else "tok_" + digest[:16]
