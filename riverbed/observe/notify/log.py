"""The log notifier: an event becomes one record on the ``riverbed.alarm`` logger.

The whole event rides along as ``record.fields`` so a structured (JSON) log handler can emit
it field by field; the message is a one-line summary for plain-text logs.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("riverbed.alarm")


class LogNotifier:
    """Writes events to the log: WARNING for an alarm firing or a run failing, else INFO."""

    def notify(self, event: dict[str, Any]) -> None:
        """Log ``event`` with ``extra={"fields": event}``."""
        logger.log(level_of(event), summary(event), extra={"fields": event})


def level_of(event: dict[str, Any]) -> int:
    """WARNING when someone should act (ALARM, a failed run), INFO for recoveries and news."""
    if event.get("state") == "ALARM" or event.get("status") == "failed":
        return logging.WARNING
    return logging.INFO


def summary(event: dict[str, Any]) -> str:
    """One human line for ``event``."""
    kind = event.get("kind", "event")
    if kind == "alarm":
        line = f"alarm {event.get('alarm')} is {event.get('state')}"
        if event.get("previous"):
            line += f" (was {event['previous']})"
        return f"{line}: {event['reason']}" if event.get("reason") else line
    if kind == "run":
        line = f"run {event.get('run_id', '?')} {event.get('status', 'finished')}"
        return f"{line}: {event['error']}" if event.get("error") else line
    return f"{kind}: {event.get('message') or event.get('reason') or ''}".rstrip(": ")
