"""Encryption at rest of the lake's Parquet files (``lake.encryption``): Parquet modular
encryption through ``pyarrow.parquet.encryption``, behind a small KMS interface.

Every file is written with an encrypted footer and every column encrypted: the personal
columns (riverbed.config.personal) under data keys wrapped (through a KEK) by master key
``pii_key``, the footer and every other column under ``footer_key``. Double wrapping and
internal key material: a file holds its data keys wrapped by a KEK, and the KEK's reference
in the KMS (``KeyWrapper``), so nothing outside the file and the KMS is needed to read it,
and rotating a master key re-wraps KEKs without rewriting a file (riverbed.lake.keyring).

``LakeCrypto`` is made once per keyring and key set in a process (``crypto_for``): pyarrow's
CryptoFactory caches KEKs per instance for ``key_cache_seconds``, so writers share a handful
of KEKs instead of asking the KMS for one per file. A storage carries its ``crypto`` (None
when encryption is off); riverbed.lake.parquet is the one place that uses it.

A KMS failure inside pyarrow (in a callback from C++) comes back as a generic Arrow error;
``reading`` turns it back into the KeyringError the callback raised, whose one line names
``lake.encryption`` and the fix, and never a key.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet.encryption as pe

from riverbed.config.stores import LakeEncryptionConfig
from riverbed.lake.keyring import Keyring, KeyringError

ALGORITHM = "AES_GCM_V1"
DATA_KEY_BITS = 256


class KeyWrapper(Protocol):
    """A KMS: wraps a key under a master key and returns a reference only it can resolve."""

    def wrap(self, key: bytes, master: str) -> str: ...
    def unwrap(self, ref: str, master: str) -> bytes: ...


class _KmsClient(pe.KmsClient):  # type: ignore[misc]
    """pyarrow's KMS callback, passing to a KeyWrapper and keeping its failure for ``reading``."""

    def __init__(self, keys: KeyWrapper, failure: threading.local):
        super().__init__()
        self._keys = keys
        self._failure = failure

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return self._call(lambda: self._keys.wrap(bytes(key_bytes), master_key_identifier))

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return self._call(lambda: self._keys.unwrap(wrapped_key, master_key_identifier))

    def _call(self, work: Any) -> Any:
        try:
            return work()
        except KeyringError as exc:
            self._failure.error = exc
            raise


class LakeCrypto:
    """How the lake's files are encrypted and decrypted, for one set of keys."""

    def __init__(
        self, keys: KeyWrapper, config: LakeEncryptionConfig, personal: frozenset[str]
    ) -> None:
        self.keys = keys
        self.footer_key = config.footer_key
        self.pii_key = config.pii_key
        self.personal = personal
        self._failure = threading.local()
        self._factory = pe.CryptoFactory(lambda _: _KmsClient(keys, self._failure))
        self._kms = pe.KmsConnectionConfig()
        lifetime = datetime.timedelta(seconds=config.key_cache_seconds)
        self._lifetime = lifetime

    def encryption(self, schema: pa.Schema) -> Any:
        """FileEncryptionProperties for a file of ``schema`` (fresh data keys per file)."""
        personal = [f.name for f in schema if f.name in self.personal]
        config = pe.EncryptionConfiguration(
            footer_key=self.footer_key,
            column_keys={self.pii_key: personal} if personal else {},
            # every column is encrypted: the personal ones under their key, the rest under
            # the footer key (a column with no key of its own would be left in clear)
            uniform_encryption=None if personal else True,
            encryption_algorithm=ALGORITHM,
            plaintext_footer=False,
            double_wrapping=True,
            internal_key_material=True,
            cache_lifetime=self._lifetime,
            data_key_length_bits=DATA_KEY_BITS,
        )
        with self.reading():
            return self._factory.file_encryption_properties(self._kms, config)

    def decryption(self) -> Any:
        """FileDecryptionProperties for reading any lake file."""
        config = pe.DecryptionConfiguration(cache_lifetime=self._lifetime)
        return self._factory.file_decryption_properties(self._kms, config)

    def dataset_format(self) -> Any:
        """A ``pyarrow.dataset.ParquetFileFormat`` that decrypts as it scans."""
        import pyarrow.dataset as ds  # only the engines need it

        config = ds.ParquetDecryptionConfig(
            self._factory, self._kms, pe.DecryptionConfiguration(cache_lifetime=self._lifetime)
        )
        options = ds.ParquetFragmentScanOptions(decryption_config=config)
        return ds.ParquetFileFormat(default_fragment_scan_options=options)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Raise the KMS's own error when pyarrow fails because of it."""
        self._failure.error = None
        try:
            yield
        except (OSError, pa.ArrowException):
            failure = getattr(self._failure, "error", None)
            if failure is not None:
                raise failure from None
            raise  # not the keys' doing: a damaged file stays what it is (set aside, ...)


_keyrings: dict[tuple[Path, str | None], Keyring] = {}
_made: dict[tuple[Any, ...], LakeCrypto] = {}
_made_lock = threading.RLock()


def crypto_for(config: LakeEncryptionConfig, root: Path) -> LakeCrypto | None:
    """The LakeCrypto of ``lake.encryption`` (None when off), one per keyring and key set in
    this process so that every storage shares its KEK cache; a relative keyring path is
    resolved against ``root``, the project folder."""
    if not config.enabled:
        return None
    path = config.keyring.expanduser()
    path = path if path.is_absolute() else root / path
    keyring = keyring_at(path, config)
    key = (keyring, config.footer_key, config.pii_key, config.key_cache_seconds, config.personal)
    with _made_lock:
        if key not in _made:
            _made[key] = LakeCrypto(keyring, config, config.personal)
        return _made[key]


def keyring_at(path: Path, config: LakeEncryptionConfig | None = None) -> Keyring:
    """The one Keyring of ``path`` in this process (its copy in memory is shared), its master
    keys sealed by ``config.master_key`` when set."""
    passphrase = None
    if config is not None and config.master_key is not None:
        try:
            passphrase = config.master_key.reveal()
        except ValueError as exc:  # names the variable or file, never the value
            raise KeyringError(
                f"lake.encryption.master_key: {exc}; set it, or fix lake.encryption.master_key "
                "in riverbed.yaml"
            ) from None
    with _made_lock:
        key = (path.resolve(), passphrase)
        if key not in _keyrings:
            _keyrings[key] = Keyring(path, passphrase)
        return _keyrings[key]
