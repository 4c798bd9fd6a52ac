"""The local keyring: the lake's master keys, and the key-encryption keys (KEKs) they wrap.

Envelope encryption, three levels (Parquet modular encryption's double wrapping):

- each file's columns and footer are encrypted with data keys (DEKs) made for that file;
- the DEKs are wrapped by a KEK, in C++, and kept in the file's footer (internal key material);
- the KEK is wrapped here by a **master key** (AES-256-GCM), and the file keeps only a
  reference to it (``kek-<uuid>``); the wrapped KEK itself lives in this keyring.

So rotating a master key (``riverbed keys rotate``) re-wraps the few KEKs and rewrites no data
file: a file's reference still finds its KEK, now wrapped by the new master key version.

One JSON file (``lake.encryption.keyring``, 0600), replaced atomically (a temp file in the same
folder, fsynced, renamed over it) under an exclusive lock on ``<keyring>.lock``, which every
process writing or rotating takes::

    {"format": 1,
     "masters": {"footer": {"current": 2, "versions": {"2": "<base64 key>"}}, ...},
     "keks": {"kek-<uuid>": {"master": "footer", "version": 2, "wrapped": "<base64>"}}}

Rotation is one such replacement: a new version of every master key, every KEK re-wrapped
under it, the old versions gone, all in the file that replaces the old one. A kill at any
point leaves the old keyring or the new one, never a mix, and a rerun rotates what is there.
A temp file a kill left behind (it holds keys) is removed by the next write.

Nothing here logs, raises or returns key material: errors name the keyring, the master key id
and version and the KEK reference, which are not secret.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from riverbed.lake.storage import LakeError
from riverbed.private import create_private, private_folders

log = logging.getLogger("riverbed.lake")

FORMAT = 1
MASTER_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12


class KeyringError(LakeError):
    """The lake's keys cannot be used: a missing or damaged keyring, a key it does not hold."""


@dataclass(frozen=True)
class Rotation:
    """What ``Keyring.rotate`` did: the master keys' new versions and the KEKs re-wrapped."""

    versions: dict[str, int]
    rewrapped: int


class Keyring:
    """Master keys and wrapped KEKs in one 0600 file; safe to share between processes."""

    def __init__(self, path: Path, passphrase: str | None = None):
        self.path = path
        self._sealing = Sealing(passphrase, path) if passphrase is not None else None
        self._lock_path = path.with_name(path.name + ".lock")
        self._mutex = threading.Lock()  # one process's threads; the file lock is per process
        self._data: dict[str, Any] | None = None

    # --- the KMS operations -------------------------------------------------------------------

    def wrap(self, key: bytes, master: str) -> str:
        """Wrap KEK ``key`` under the current version of master key ``master`` (made if the
        keyring has none of that id yet); returns the reference a file keeps."""
        with self._locked() as data:
            version, master_key = self._current(data, master)
            ref = f"kek-{uuid.uuid4().hex}"
            data["keks"][ref] = {
                "master": master,
                "version": version,
                "wrapped": _seal(master_key, key, _aad(ref, master, version)),
            }
            self._write(data)
            return ref

    def unwrap(self, ref: str, master: str) -> bytes:
        """The KEK ``ref`` names, unwrapped with the master key version it was wrapped with."""
        with self._mutex:
            cached = self._data
        for data in (cached, None):  # the copy in memory, else the file (another process's)
            data = data if data is not None else self._load()
            entry = data["keks"].get(ref)
            if entry is None or str(entry["version"]) not in _versions(data, entry["master"]):
                continue  # not there, or wrapped under a version rotated away since: reload
            if entry["master"] != master:
                raise KeyringError(
                    f"lake.encryption: {ref} in {self.path} is wrapped by master key "
                    f"{entry['master']}, the file names {master}; the keyring is not this lake's"
                )
            return self._open_kek(data, ref, entry)
        raise KeyringError(
            f"lake.encryption: the keyring {self.path} cannot unwrap {ref} (master key "
            f"{master}), which a lake file needs; restore the keyring the lake was written with "
            "(lake.encryption.keyring)"
        )

    # --- rotation ------------------------------------------------------------------------------

    def rotate(self, masters: list[str]) -> Rotation:
        """Give each of ``masters`` (and every other master key in the keyring) a new version,
        re-wrap every KEK under it and drop the old versions: one atomic replacement."""
        with self._locked() as data:
            for name in masters:
                self._current(data, name)  # a master key named in config but never used yet
            fresh: dict[str, tuple[int, bytes]] = {}
            for name, entry in data["masters"].items():
                version = max(int(v) for v in entry["versions"]) + 1
                fresh[name] = (version, AESGCM.generate_key(MASTER_KEY_BYTES * 8))
            for ref, kek in data["keks"].items():
                name = kek["master"]
                clear = self._open_kek(data, ref, kek)
                version, key = fresh[name]
                kek.update(version=version, wrapped=_seal(key, clear, _aad(ref, name, version)))
            for name, (version, key) in fresh.items():
                data["masters"][name] = {"current": version, "versions": {str(version): _b64(key)}}
            self._write(data)
            return Rotation({n: v for n, (v, _) in fresh.items()}, len(data["keks"]))

    # --- the file ------------------------------------------------------------------------------

    def _open_kek(self, data: dict[str, Any], ref: str, kek: dict[str, Any]) -> bytes:
        return _open(self._key_of(data, kek["master"], int(kek["version"])), ref, kek, self.path)

    def _key_of(self, data: dict[str, Any], name: str, version: int | None) -> bytes:
        entry = data["masters"].get(name)
        wanted = str(entry["current"] if version is None else version) if entry else None
        if entry is None or wanted not in entry["versions"]:
            raise KeyringError(
                f"lake.encryption: the keyring {self.path} has no master key {name} version "
                f"{version}; restore the keyring the lake was written with"
            )
        return _unb64(entry["versions"][wanted])

    def _current(self, data: dict[str, Any], master: str) -> tuple[int, bytes]:
        entry = data["masters"].get(master)
        if entry is None:
            entry = {"current": 1, "versions": {"1": _b64(AESGCM.generate_key(256))}}
            data["masters"][master] = entry
            log.info("lake.encryption: made master key %s in keyring %s (0600)", master, self.path)
        version = int(entry["current"])
        return version, self._key_of(data, master, version)

    def _load(self, cache: bool = True) -> dict[str, Any]:
        """The keyring as on disk (empty when there is none yet); kept as the copy in memory
        unless ``cache`` is False (a read-modify-write keeps it only once written)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            data: dict[str, Any] = {"format": FORMAT, "masters": {}, "keks": {}}
        except OSError as exc:
            raise KeyringError(
                f"lake.encryption: cannot read the keyring {self.path} ({exc.strerror}); fix "
                "its permissions or lake.encryption.keyring"
            ) from None
        else:
            data = _parse(text, self.path)
            if "sealed" in data:
                if self._sealing is None:
                    raise KeyringError(
                        f"lake.encryption: the keyring {self.path} is sealed by a master key; "
                        "set lake.encryption.master_key ({env: NAME} or {file: PATH}) to it"
                    )
                data["masters"] = self._sealing.open(data.pop("sealed"))
        if cache:
            with self._mutex:
                self._data = data
        return data

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The keyring as on disk, under the exclusive file lock, for a read-modify-write."""
        private_folders(self.path.parent)
        with self._mutex:
            descriptor = create_private(self._lock_path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield self._load(cache=False)
        finally:
            os.close(descriptor)  # releases the lock

    def _write(self, data: dict[str, Any]) -> None:
        folder = self.path.parent
        for stale in folder.glob(f".{self.path.name}.*.tmp"):  # left by a kill; holds keys
            stale.unlink(missing_ok=True)
        temp = folder / f".{self.path.name}.{uuid.uuid4().hex[:16]}.tmp"
        descriptor = create_private(temp)
        try:
            stored = data
            if self._sealing is not None:  # the master keys only sealed, the KEKs as they are
                stored = {**data, "masters": {}, "sealed": self._sealing.seal(data["masters"])}
            os.write(descriptor, json.dumps(stored, indent=1, sort_keys=True).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        new = not self.path.exists()
        os.replace(temp, self.path)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if new:
            log.info("lake.encryption: created keyring %s (0600); back it up", self.path)
        with self._mutex:
            self._data = data


class Sealing:
    """The keyring's master keys sealed (AES-256-GCM) under a key derived (scrypt) from
    ``lake.encryption.master_key``, a secret kept apart from the file ({env:} or {file:}): the
    keyring file alone then opens nothing."""

    AAD = b"riverbed keyring master keys"

    def __init__(self, passphrase: str, path: Path):
        self._passphrase = passphrase.encode()
        self._path = path
        self._keys: dict[bytes, bytes] = {}  # salt -> derived key (scrypt is slow on purpose)

    def seal(self, masters: dict[str, Any]) -> dict[str, str]:
        salt = os.urandom(16)
        clear = json.dumps(masters, sort_keys=True).encode()
        return {"salt": _b64(salt), "masters": _seal(self._key(salt), clear, self.AAD)}

    def open(self, sealed: dict[str, str]) -> dict[str, Any]:
        salt, wrapped = _unb64(sealed["salt"]), _unb64(sealed["masters"])
        try:
            clear = AESGCM(self._key(salt)).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self.AAD
            )
        except InvalidTag:
            raise KeyringError(
                f"lake.encryption.master_key does not open the keyring {self._path}: it was "
                "sealed by another key; set lake.encryption.master_key to the key it was sealed by"
            ) from None
        masters: dict[str, Any] = json.loads(clear)
        return masters

    def _key(self, salt: bytes) -> bytes:
        if salt not in self._keys:
            self._keys[salt] = hashlib.scrypt(
                self._passphrase, salt=salt, n=2**14, r=8, p=1, dklen=MASTER_KEY_BYTES
            )
        return self._keys[salt]


def _parse(text: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT or not isinstance(data.get("masters"), dict):
            raise ValueError
        data.setdefault("keks", {})
    except (ValueError, AttributeError):
        raise KeyringError(
            f"lake.encryption: {path} is not a Riverbed keyring; restore it from a backup or "
            "point lake.encryption.keyring at the lake's keyring"
        ) from None
    return dict(data)


def _versions(data: dict[str, Any], master: str) -> dict[str, str]:
    versions: dict[str, str] = data["masters"].get(master, {}).get("versions", {})
    return versions


def _open(key: bytes, ref: str, kek: dict[str, Any], path: Path) -> bytes:
    name, version = kek["master"], int(kek["version"])
    wrapped = _unb64(kek["wrapped"])
    try:
        return AESGCM(key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(ref, name, version)
        )
    except InvalidTag:
        raise KeyringError(
            f"lake.encryption: master key {name} version {version} in {path} cannot unwrap "
            f"{ref}: the keyring was altered or is not this lake's; restore the keyring the "
            "lake was written with"
        ) from None


def _seal(key: bytes, clear: bytes, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return _b64(nonce + AESGCM(key).encrypt(nonce, clear, aad))


def _aad(ref: str, master: str, version: int) -> bytes:
    # a wrapped KEK opens only as the entry it was made for, not moved under another name
    return f"{ref}|{master}|{version}".encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
