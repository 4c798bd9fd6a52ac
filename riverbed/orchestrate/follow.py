"""`riverbed run --follow`: a run as soon as capture publishes new raw files, until stopped.

Why this shape:

* **How it learns of new files.** Capture makes raw files visible by committing their rows in
  the lake's manifest (riverbed.capture.stream), so the manifest is where "new files" is
  true first, whatever the lake is (a folder or S3) and wherever capture runs. Every
  ``orchestration.follow.poll_seconds`` (0.1 s) the follower reads the newest raw file's
  ``created_at`` (``LakeFiles.newest``: one probe of the index ``lake_files_by_created``, the
  same cost after a million files as after ten) on one state-store connection it keeps open;
  a mark that moved starts a run. That works for the SQLite state and for the PostgreSQL one
  alike; LISTEN/NOTIFY would save the polling only for the latter, and a 0.1 s probe costs
  less than a millisecond. The mark is read *before* a run starts: files landing while it
  runs move the mark again and start the next run right after it, never waiting for a tick.
  ``created_at`` is the committing host's clock: a capture host whose clock is behind could
  commit a file under the mark; the idle run below takes it.
* **The runs are `riverbed run`'s own** (riverbed.orchestrate.runner.run_pipeline): each takes
  the project's run lock and releases it, has its row in the run history, its retries, its
  metrics and its alarm evaluation; nothing is skipped to be quicker but the extract (below).
  A kill -9 in the middle leaves what a killed `run --every` leaves: the next run (of a
  restarted follower) takes the lock over, marks the dead run aborted, and the stages'
  bookmarks make it exact.
* **An idle run** every ``idle_run_seconds`` (60 s) when nothing arrived: the time since the
  last success stays a measure of the pipeline's health, not of the traffic, and alarms are
  evaluated after it as after every run.
* **A failed run** is reported as `run --every` reports it (the caller's ``on_report``); its
  unfinished work is taken by the next run, which starts after a back-off that doubles from
  1 s up to FAILED_BACKOFF_MAX whether or not new files came: a broken warehouse must not be
  hit (and notified about) at every flush. A run that cannot start (the lock held by another
  process) raises, as under `--every`.
* **The extract** (riverbed.serve.extracts) is the costly part of publish (4 s on the demo
  shop on a quiet 2-core machine, 9-12 s on a loaded one: more than the rest of a small
  run), and dashboards read it, not the fact tables. While raw files keep arriving the
  follower lets publish refresh it at most every ``extract_every_seconds`` (120 s); a run
  after which no new file landed refreshes it always, so when traffic pauses the extract is
  current. A skipped refresh loses nothing: the next one starts from its own watermark (the
  loads since its previous generation). Why not more often: every refresh delays the rows
  that land meanwhile by its own length; at 30 s, a third of the probes of bench/e2e.py
  waited for one (p95 20 s instead of 7 s on a loaded machine); at 120 s a few percent do.
  Why not beside the runs, on a thread: the refresh reads the loads recorded since its
  watermark and the warehouse as of its own snapshot; a load committing between the two
  would be counted twice or not at all.
* **Stopping** is the caller's ``should_stop`` (SIGINT/SIGTERM, as for `run --every`): it is
  checked between polls (every poll_seconds) and between runs; a run in flight finishes first.

Latency, end to end, is then the lake flush (``lake.max_seconds``: a second or less when
freshness matters, see the README), the rest of the run in flight, and one run.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from riverbed.config.loader import Project
from riverbed.errors import RiverbedError, first_line
from riverbed.orchestrate.runner import RunReport, run_pipeline
from riverbed.state import open_state

log = logging.getLogger("riverbed.run")
FAILED_BACKOFF_MAX = 60.0  # seconds between runs while they keep failing
_UNSEEN = object()  # a mark no read returns: the next poll starts a run


class RawFileWatch:
    """The lake manifest's high-water mark for raw files, on a connection kept open."""

    def __init__(self, project: Project):
        self._store = open_state(project)

    def mark(self) -> object:
        """The newest raw file's created_at; ``_UNSEEN`` when it could not be read (a busy
        store: the run that follows would find out what is new anyway)."""
        try:
            return self._store.lake.newest("raw")
        except RiverbedError as exc:
            log.warning("run --follow: the lake's manifest could not be read: %s", first_line(exc))
            return _UNSEEN

    def close(self) -> None:
        self._store.close()


class Follower:
    """When the next run starts, and whether its publish refreshes the extract."""

    def __init__(self, project: Project, clock: Callable[[], float] = time.monotonic):
        self.settings = project.config.orchestration.follow
        self.watch = RawFileWatch(project)
        self.clock = clock
        self.seen: object = _UNSEEN  # the mark the last run started from
        self.last_run = -math.inf
        self.last_extract = -math.inf
        self.failures = 0

    def due(self) -> bool:
        """A run should start now: new raw files, or the idle run's time."""
        if self.clock() - self.last_run >= self.settings.idle_run_seconds:
            return True
        mark = self.watch.mark()
        return mark is _UNSEEN or mark != self.seen

    def starting(self) -> None:
        self.seen = self.watch.mark()  # before the run: what lands during it starts the next

    def extract_due(self) -> bool:
        """Publish's question: refresh the extract in this run? (see the module docstring)"""
        caught_up = self.watch.mark() == self.seen
        due = caught_up or self.clock() - self.last_extract >= self.settings.extract_every_seconds
        if due:
            self.last_extract = self.clock()
        return due

    def finished(self, report: RunReport) -> float:
        """Seconds to wait before the next run may start: 0 after a success."""
        self.last_run = self.clock()
        if report.status == "succeeded":
            self.failures = 0
            return 0.0
        self.failures += 1
        self.seen = _UNSEEN  # its work is still pending: the next run takes it, new files or not
        return min(FAILED_BACKOFF_MAX, 2.0 ** (self.failures - 1))

    def close(self) -> None:
        self.watch.close()


def run_following(
    project: Project,
    *,
    should_stop: Callable[[], bool],
    on_report: Callable[[RunReport], None],
    engine: str | None = None,
    wait: Callable[[float], bool] | None = None,
) -> None:
    """Start a run whenever capture has published raw files since the last one started, until
    ``should_stop``; ``wait(seconds)`` pauses (True: stop now)."""
    stopped = threading.Event()
    pause = wait or stopped.wait
    follower = Follower(project)
    try:
        while not should_stop():
            if not follower.due():
                if pause(follower.settings.poll_seconds):
                    return
                continue
            follower.starting()
            report = run_pipeline(
                project, trigger="follow", engine=engine, extract_due=follower.extract_due
            )
            on_report(report)
            delay = follower.finished(report)
            while delay > 0 and not should_stop():  # short steps: a stop is honoured promptly
                step = min(delay, 0.5)
                if pause(step):
                    return
                delay -= step
    finally:
        follower.close()
