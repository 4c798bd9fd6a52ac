"""Principals' passwords and tokens, kept only as salted scrypt hashes.

The config names where a secret lives (``password: {env: NAME}`` or ``{file: PATH}``); it is
read once, when ``Credentials.from_policy`` runs, hashed with a random salt and dropped: from
then on only the hash is in memory, and a login attempt is checked by hashing what was given
with the same salt and comparing in constant time (``hmac.compare_digest``). A principal
without the secret, or an unknown principal, costs the same scrypt as a wrong secret, so
timing does not tell which principals exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from riverbed.config.fields import SecretRef
from riverbed.config.governance import GovernanceConfig
from riverbed.govern.policy import GovernError

# scrypt's cost: 16 MiB and about 50 ms per check on a laptop core (OWASP's minimum is
# N=2**17 with r=8 for 128 MiB; this is the interactive-login figure of the scrypt paper)
_N, _R, _P = 2**14, 8, 1
_LENGTH = 32


@dataclass(frozen=True)
class Hashed:
    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, secret: str) -> Hashed:
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(secret, salt))

    def matches(self, attempt: str) -> bool:
        return hmac.compare_digest(_scrypt(attempt, self.salt), self.digest)


def _scrypt(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_LENGTH)


_DECOY = Hashed(b"\0" * 16, b"\0" * _LENGTH)  # checked when there is nothing to check


class Credentials:
    """The principals' password and token hashes."""

    def __init__(self, passwords: dict[str, Hashed], tokens: dict[str, Hashed]):
        self._passwords = passwords
        self._tokens = tokens

    @classmethod
    def from_config(cls, governance: GovernanceConfig) -> Credentials:
        """Read and hash every principal's password and token; GovernError naming the key
        of one that cannot be read."""
        passwords: dict[str, Hashed] = {}
        tokens: dict[str, Hashed] = {}
        for name, principal in governance.principals.items():
            for kind, ref, into in (
                ("password", principal.password, passwords),
                ("token", principal.token, tokens),
            ):
                if ref is not None:
                    into[name] = Hashed.of(_reveal(ref, f"governance.principals.{name}.{kind}"))
        return cls(passwords, tokens)

    def check_password(self, principal: str, password: str) -> bool:
        """Whether ``password`` is ``principal``'s."""
        return _check(self._passwords.get(principal), password)

    def check_token(self, principal: str, token: str) -> bool:
        """Whether ``token`` is ``principal``'s."""
        return _check(self._tokens.get(principal), token)

    def token_owner(self, token: str) -> str | None:
        """The principal whose token ``token`` is, or None. Every token is checked, a match
        or not (at least one check when there are none), so the time taken does not tell
        which principal holds it, or whether any does."""
        owner = None
        for principal, stored in self._tokens.items():
            if stored.matches(token) and owner is None:
                owner = principal
        if not self._tokens:
            _DECOY.matches(token)
        return owner


def _check(stored: Hashed | None, attempt: str) -> bool:
    if stored is None:
        _DECOY.matches(attempt)  # the same work as a real check
        return False
    return stored.matches(attempt)


def _reveal(ref: SecretRef, key: str) -> str:
    try:
        value = ref.reveal()
    except ValueError as exc:
        raise GovernError(f"{key}: {exc}") from None
    if not value:
        raise GovernError(f"{key}: the secret is empty; set a password or token there")
    return value
