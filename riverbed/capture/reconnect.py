"""`capture --follow` outlives its connection: a transient failure (the source restarting, a
dropped connection, a slot busy for longer than a start waits) is retried with backoff until
stopped, resuming exactly from the lake's committed position (riverbed.capture.stream).

Each interruption is one warning line and one sample of the counter
``capture_interruptions_total``, so an alarm can tell someone that capture is riding out a
fault (the lag alarm alone fires only once the fault has lasted minutes). The sample is best
effort: the state store may be the very thing that failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from riverbed.capture.runner import CaptureResult, run_capture
from riverbed.config.loader import Project
from riverbed.errors import RiverbedError
from riverbed.state import open_state

RECONNECT_MAX_SECONDS = 30.0

log = logging.getLogger("riverbed.capture")


def capture_reconnecting(
    project: Project,
    follow: bool,
    should_stop: Callable[[], bool] = lambda: False,
    say: Callable[[str], None] = lambda _: None,
    resnapshot: bool = False,
    force: bool = False,
) -> CaptureResult:
    """run_capture; following, transient failures are retried until ``should_stop()``. A
    capture that never got going (no position yet: a wrong DSN, a missing schema) fails at
    once instead of retrying for ever."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            return run_capture(
                project,
                follow=follow,
                should_stop=should_stop,
                say=say,
                resnapshot=resnapshot and failures == 0,
                force=force,
            )
        except RiverbedError as exc:
            if not follow or not exc.transient or should_stop() or not _under_way(project):
                raise
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = min(RECONNECT_MAX_SECONDS, 2.0 ** (failures - 1))
            # once: the console shows warnings, and the log file keeps them
            log.warning(
                "capture interrupted: %s; reconnecting in %.0f s (Ctrl-C stops)", exc, delay
            )
            _count_interruption(project)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.2)
            if should_stop():
                return CaptureResult()  # stopped while waiting: everything captured is kept


def _count_interruption(project: Project) -> None:
    try:
        manifest = open_state(project)
        try:
            manifest.metrics.record({"capture_interruptions_total": 1.0}, {})
        finally:
            manifest.close()
    except Exception:  # noqa: BLE001 - a metric must never stop the reconnecting
        log.debug("could not record capture_interruptions_total", exc_info=True)


def _under_way(project: Project) -> bool:
    """Whether the capture has a position to resume from."""
    manifest = open_state(project)
    try:
        slot = manifest.capture.names(project.config.source)[0]
        return slot is not None and manifest.capture.position(slot) is not None
    finally:
        manifest.close()
