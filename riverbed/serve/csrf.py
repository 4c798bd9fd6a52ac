"""Cross-site request forgery: a request another site makes the browser send with our cookie
must not act as the logged-in principal.

Two defences, either enough on its own: the session cookie is ``SameSite=Strict`` (a browser
does not send it with a request another site starts), and every POST authenticated by that
cookie (every form, every API call) carries the session's CSRF token, in the form field
``csrf_token`` or the header ``X-CSRF-Token``, compared in constant time. Another site can
neither read the token (same-origin policy) nor guess it (256 random bits). A request with a
bearer token carries no ambient credential and needs none.

The login form has no session yet: its token is a double submit bound by a key. The page sets
a random nonce in a cookie and puts HMAC(key, nonce) in the form; the POST must bring both, and
the HMAC must match. The key is generated once into ``.riverbed/serve.secret`` (0600,
riverbed.private), so a form served before a restart still logs in after it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from riverbed.private import create_private, private_folders

FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
LOGIN_COOKIE = "riverbed_login"


def matches(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the token ``expected``, in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def secret_key(path: Path) -> bytes:
    """The app's key in the file ``path``, created (0600) with 32 random bytes if missing."""
    if not path.exists():
        private_folders(path.parent)
        try:
            descriptor = create_private(path)
        except FileExistsError:  # another process made it first
            pass
        else:
            with open(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())


class LoginForms:
    """The login form's double-submit tokens under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self) -> tuple[str, str]:
        """(the nonce for the login cookie, the token for the form)."""
        nonce = secrets.token_urlsafe(32)
        return nonce, self._sign(nonce)

    def valid(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and matches(self._sign(str(nonce)), token)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()
