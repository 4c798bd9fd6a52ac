"""Notifications: telling people that an alarm changed state or a run failed.

A notifier is anything with ``notify(event)``; one module per implementation (``log``,
``webhook``, ``command``). Events are plain JSON-able dicts with a ``kind`` ("alarm", "run").
By convention an alarm event carries ``alarm``, ``state`` and ``previous``; a run event carries
``run_id`` and ``status`` ("succeeded" | "failed").

Delivery goes through a :class:`Dispatcher` so the pipeline never waits on a slow webhook: one
daemon worker thread drains a bounded queue. A full queue drops the event rather than block the
caller or grow without bound while a receiver is down. A notifier that fails never raises into
the pipeline — a broken pager must not break the data flow. ``close(timeout)`` lets a short CLI
process wait, boundedly, for the notification of its own last run; a caller that wants every
retry a notifier makes waits RETRY_WINDOW_SECONDS (plus one attempt) for it.

A notification given up — failed after its retries, dropped from a full queue, or still
undelivered when ``close`` returns — is one ERROR line on ``riverbed.notify`` and counts in
``Dispatcher.given_up``, which the caller records as a metric: nobody is told, so it must show.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from riverbed.config.models import RiverbedConfig
from riverbed.errors import RiverbedError, first_line

logger = logging.getLogger("riverbed.notify")

DEFAULT_MAX_PENDING = 100  # events waiting for delivery before new ones are dropped
RETRY_WINDOW_SECONDS = 30.0  # how long a notifier keeps retrying one event (the README's promise)


class NotifyError(RiverbedError):
    """A notification could not be delivered. The message names the notifier, never a secret."""


class Notifier(Protocol):
    """Delivers one event somewhere. Raises on failure; the Dispatcher logs it."""

    def notify(self, event: dict[str, Any]) -> None: ...


def open_notifiers(config: RiverbedConfig) -> dict[str, Notifier]:
    """Build every notifier of ``config.notifiers``, by name. Secrets are read at delivery."""
    # imported here: the implementations import NotifyError from this module
    from riverbed.observe.notify.command import CommandNotifier
    from riverbed.observe.notify.log import LogNotifier
    from riverbed.observe.notify.webhook import WebhookNotifier

    notifiers: dict[str, Notifier] = {}
    for name, settings in config.notifiers.items():
        if settings.type == "log":
            notifiers[name] = LogNotifier()
        elif settings.type == "webhook":
            notifiers[name] = WebhookNotifier(name, settings)
        else:
            notifiers[name] = CommandNotifier(name, settings)
    return notifiers


class Dispatcher:
    """Delivers events to named notifiers on a background thread, never blocking the caller."""

    def __init__(self, notifiers: Mapping[str, Notifier], max_pending: int = DEFAULT_MAX_PENDING):
        self._notifiers = dict(notifiers)
        # None is the stop mark close() queues: everything before it is delivered first
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(max_pending)
        self._closed = False
        self._lock = threading.Lock()
        self._undelivered: dict[str, int] = {}  # notifier -> events queued or being delivered
        self._abandoned = False  # close() gave up on what was left: counted there, not again
        self.given_up = 0  # notifications given up so far (see the module docstring)
        # daemon: a delivery stuck past close()'s timeout must not keep the process alive
        self._thread = threading.Thread(target=self._run, name="riverbed-notify", daemon=True)
        self._thread.start()

    def send(self, names: Iterable[str], event: dict[str, Any]) -> None:
        """Queue ``event`` for each notifier in ``names``; returns at once."""
        for name in names:
            if name not in self._notifiers:
                logger.warning(
                    "no notifier named %r; defined: %s (check the notify: lists in the config)",
                    name,
                    ", ".join(self._notifiers) or "none",
                )
                continue
            if self._closed:
                logger.warning(
                    "%s event for %s dropped: the dispatcher is closed", _kind(event), name
                )
                continue
            try:
                self._queue.put_nowait((name, dict(event)))
            except queue.Full:
                self._give_up(
                    "%s event for %s dropped: %d notifications already pending",
                    _kind(event),
                    name,
                    self._queue.maxsize,
                )
                continue
            with self._lock:
                self._undelivered[name] = self._undelivered.get(name, 0) + 1

    def close(self, timeout: float) -> bool:
        """Stop accepting events and wait at most ``timeout`` seconds for pending deliveries.

        Returns True when everything queued was delivered (or failed and was logged), False
        when deliveries were still running at the deadline; those are abandoned with the
        process, each counted as given up and named in one ERROR line.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._closed:
            self._closed = True
            # blocking put: the worker frees space as it drains, so the stop mark gets in
            # unless the deadline comes first (then what is left is given up below)
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=max(timeout, 0.0))
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if not self._thread.is_alive():
            return True
        with self._lock:
            left = {name: n for name, n in self._undelivered.items() if n}
            if not self._abandoned and left:
                self._abandoned = True
                self.given_up += sum(left.values())
                logger.error(
                    "notification given up: %s still undelivered after %.3g s (the process "
                    "moves on without it)",
                    ", ".join(f"{n} event(s) for {name}" for name, n in sorted(left.items())),
                    timeout,
                )
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, event = item
            try:
                self._notifiers[name].notify(event)
            except NotifyError as exc:
                self._give_up("notification given up: %s", exc)
            except Exception as exc:  # a notifier bug must not kill the worker
                self._give_up(
                    "notification given up: notifier %s failed on a %s event: %s: %s",
                    name,
                    _kind(event),
                    type(exc).__name__,
                    first_line(exc),
                )
            finally:
                with self._lock:
                    self._undelivered[name] -= 1

    def _give_up(self, message: str, *args: object) -> None:
        with self._lock:
            if self._abandoned:
                return  # close() already counted and reported what was left
            self.given_up += 1
        logger.error(message, *args)


def _kind(event: Mapping[str, Any]) -> str:
    return str(event.get("kind", "unknown"))
