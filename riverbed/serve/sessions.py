"""Server-side sessions of the web app: who is logged in, kept in this process's memory.

The cookie holds only a random 256-bit id (``secrets.token_urlsafe(32)``); everything else
(the principal, the CSRF token, when it started and was last used) stays here, keyed by the
SHA-256 of the id, so what is in memory is not itself a cookie. There is nothing to sign: an id
not in the table is no session, whoever made it. Logging out deletes the entry, so the old
cookie stops working at once, server-side, whatever the browser keeps.

A session ends after ``idle`` seconds without a request and after ``lifetime`` seconds
anyway. Sessions do not outlive the process: a restart of `riverbed serve` logs everyone out,
which is the safe side (no session file to steal, nothing to revoke after a policy change).
The table is bounded: past ``MAX_SESSIONS`` the least recently used session goes first.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "riverbed_session"
MAX_SESSIONS = 10_000


@dataclass
class Session:
    principal: str
    csrf: str  # the token every form and cookie-authenticated API call must carry
    started: float
    seen: float = field(default=0.0)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """The live sessions; thread-safe (the app answers requests from a thread pool)."""

    def __init__(
        self, idle: float, lifetime: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle, self.lifetime, self._clock = idle, lifetime, clock
        self._live: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, principal: str) -> tuple[str, Session]:
        """A new session for ``principal``: (the id for the cookie, the session)."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(principal, secrets.token_urlsafe(32), started=now, seen=now)
        with self._lock:
            self._live[_key(session_id)] = session
            while len(self._live) > MAX_SESSIONS:
                self._live.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id``, its use recorded; None if there is none or it
        has expired (an expired one is dropped)."""
        if not session_id:
            return None
        key = _key(session_id)
        now = self._clock()
        with self._lock:
            session = self._live.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.started > self.lifetime:
                del self._live[key]
                return None
            session.seen = now
            self._live.move_to_end(key)
            return session

    def end(self, session_id: str | None) -> None:
        """Forget the session (logout); an unknown id is ignored."""
        if session_id:
            with self._lock:
                self._live.pop(_key(session_id), None)
