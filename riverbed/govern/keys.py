"""`riverbed keys rotate`: a new version of each of the lake's master keys, every key-encryption
key re-wrapped under it, the old versions gone; no lake file is rewritten (each keeps only the
reference of its KEK, riverbed.lake.keyring tells why).

The rotation itself is one atomic replacement of the keyring under its lock (safe to kill: the
old keyring or the new one, and a rerun rotates again); the audit record follows it, naming the
master key ids, their new versions and how many KEKs were re-wrapped, never a key.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from riverbed.config.loader import Project
from riverbed.errors import UsageError
from riverbed.govern.audit import record_change
from riverbed.lake.crypto import keyring_at
from riverbed.state.store import StateStore


@dataclass(frozen=True)
class Rotated:
    keyring: str
    versions: dict[str, int]
    rewrapped: int


def rotate_keys(project: Project, store: StateStore) -> Rotated:
    """Rotate the master keys of the project's keyring (lake.encryption) and audit it."""
    encryption = project.config.lake.encryption
    if not encryption.enabled:
        raise UsageError(
            "lake.encryption is off, so there are no lake keys to rotate; turn it on with "
            "lake.encryption: {enabled: true}"
        )
    path = project.path(encryption.keyring)
    rotation = keyring_at(path, encryption).rotate([encryption.footer_key, encryption.pii_key])
    record_change(
        store,
        principal=getpass.getuser(),
        action="rotate",
        detail={
            "keyring": str(path),
            "master_versions": rotation.versions,
            "keks_rewrapped": rotation.rewrapped,
        },
    )
    return Rotated(str(path), rotation.versions, rotation.rewrapped)
