"""Who is asking: a login by password, an API call by bearer token, and the lockout that
slows down guessing either.

Both secrets are checked against the policy's hashes (riverbed.govern.credentials). A wrong
password, an unknown principal and a principal without a password all get the same answer
(``LOGIN_REFUSED``) after the same scrypt work, so neither the message nor the time tells
which principals exist.

Lockout (``Lockout``): ``failures`` failed attempts within ``window`` seconds lock the
principal's name for ``window`` seconds, and so, separately, do as many from one client
address (one address guessing many names; many addresses guessing one name). While locked,
even the right password is refused, with the same message saying to wait. Counting names that
do not exist keeps the lockout from telling which do. The counts live in this process's
memory, not in the state store: a restart clears them, which costs an attacker a restart of the
server it cannot cause; keeping them in memory keeps a failed login from writing to the store
the pipeline needs. Bounded: past ``MAX_TRACKED`` names or addresses the oldest are forgotten.

A verified bearer token is remembered for ``TOKEN_CACHE_SECONDS`` under an HMAC of it with a
key of this process (never the token itself), so an API client pays scrypt once a minute,
not once per call; a token removed from the policy needs a restart of the server anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from riverbed.govern.credentials import Credentials

LOGIN_REFUSED = "wrong principal or password"
LOCKED = "too many failed logins; try again in a few minutes"
TOKEN_REFUSED = "missing or wrong API token"
MAX_TRACKED = 10_000
TOKEN_CACHE_SECONDS = 60.0


class Refused(Exception):
    """A login or token refused; the message is the one to show."""


class Lockout:
    """Failed attempts per key (a principal's name, a client address) in a sliding window."""

    def __init__(
        self, failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures, self.window, self._clock = failures, window, clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def locked(self, *keys: str) -> bool:
        """Whether any of ``keys`` has had ``failures`` failures within the window."""
        now = self._clock()
        with self._lock:
            return any(len(self._recent(key, now)) >= self.failures for key in keys)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
                self._seen.move_to_end(key)
            while len(self._seen) > MAX_TRACKED:
                self._seen.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """A principal's right password clears its count (not its address's)."""
        with self._lock:
            self._seen.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times


class Authenticator:
    """Logins and bearer tokens against the policy's credentials, with the lockout."""

    def __init__(self, credentials: Credentials, lockout: Lockout) -> None:
        self.credentials, self.lockout = credentials, lockout
        self._key = secrets.token_bytes(32)
        self._tokens: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def login(self, principal: str, password: str, client: str) -> str:
        """``principal`` if ``password`` is its own; Refused otherwise, or while locked."""
        keys = (f"principal:{principal}", f"client:{client}")
        if self.lockout.locked(*keys):
            raise Refused(LOCKED)
        if not principal or not self.credentials.check_password(principal, password):
            self.lockout.failed(*keys)
            raise Refused(LOGIN_REFUSED)
        self.lockout.succeeded(keys[0])
        return principal

    def bearer(self, token: str, client: str) -> str:
        """The principal holding ``token``; Refused otherwise, or while ``client`` is locked."""
        key = f"client:{client}"
        if self.lockout.locked(key):
            raise Refused(LOCKED)
        digest = hmac.new(self._key, token.encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        owner = self.credentials.token_owner(token) if token else None
        if owner is None:
            self.lockout.failed(key)
            raise Refused(TOKEN_REFUSED)
        with self._lock:
            if len(self._tokens) > MAX_TRACKED:
                self._tokens.clear()
            self._tokens[digest] = (owner, now + TOKEN_CACHE_SECONDS)
        return owner
