"""The webhook notifier: POST the event as JSON.

Webhook URLs and headers routinely carry tokens (Slack's path, ``?key=``, ``Authorization``),
so nothing here ever logs or raises more of the address than ``scheme://host:port``, and header
values are read from their secrets only at delivery. Redirects are not followed: a redirect
would replay the secret headers to another address.

Retried with exponential backoff (waits of 1, 2, 4, then 8 s) until the retry window is used:
connection errors, timeouts, 5xx and 429 (the receiver is down or busy, it may recover, and one
down for a while still gets the notice); any other 4xx or a redirect is the config's fault and retrying
cannot help. A receiver that says how long to wait (``Retry-After``, in seconds or as a date,
usually with 429 or 503) is waited for, up to MAX_WAIT_SECONDS: asking again sooner is what
rate limiters punish. All of it within the retry window (RETRY_WINDOW_SECONDS): no attempt
starts after it, and none runs past it by more than a second, so whoever waits for a delivery
knows for how long. This is the one layer that retries a delivery (riverbed.errors lists who
retries what): the Dispatcher does not, and the default machine's notify state has no Retry.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
)

from riverbed.config.alarms import NotifierConfig
from riverbed.observe.notify import RETRY_WINDOW_SECONDS, NotifyError

logger = logging.getLogger("riverbed.notify")

TIMEOUT_SECONDS = 10.0  # per attempt: connect plus response
BACKOFF_SECONDS = 1.0  # waits 1, 2, 4 s between the first attempts ...
MAX_BACKOFF_SECONDS = 8.0  # ... then 8 s between each, until the window is used
MAX_WAIT_SECONDS = 30.0  # the most a Retry-After is waited for, per attempt
MIN_ATTEMPT_SECONDS = 1.0  # the shortest timeout an attempt near the window's end gets


class _Failure(Exception):
    """One failed attempt, already stripped of the URL; ``retry_after``: the seconds the
    receiver asked to wait before the next one, if it said."""

    def __init__(self, problem: str, transient: bool, retry_after: float | None = None):
        super().__init__(problem)
        self.transient = transient
        self.retry_after = retry_after


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # the 3xx then surfaces as an HTTPError


class WebhookNotifier:
    """POSTs each event as JSON to ``config.url`` with ``config.headers``."""

    def __init__(
        self,
        name: str,
        config: NotifierConfig,
        backoff_seconds: float = BACKOFF_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
        max_wait: float = MAX_WAIT_SECONDS,
        window: float = RETRY_WINDOW_SECONDS,
    ):
        assert config.url is not None  # NotifierConfig requires it for type webhook
        self.name = name
        self.origin = origin(config.url)
        self.backoff_seconds = backoff_seconds
        self.timeout = timeout
        self.max_wait = max_wait
        self.window = window
        self._url = config.url
        self._secret_headers = config.headers
        self._opener = urllib.request.build_opener(_NoRedirects())

    def notify(self, event: dict[str, Any]) -> None:
        """Deliver ``event``; raises NotifyError after the last failed attempt."""
        body = json.dumps(event, default=str).encode()
        headers = self._headers()
        started = time.monotonic()
        retrying = Retrying(
            # retried until the window is used (a receiver down for a while still gets the
            # notice); no attempt would start after it: a wait that ends past it ends the retries
            stop=stop_before_delay(self.window),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Failure) and exc.transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    left = self.window - (time.monotonic() - started)
                    self._post(body, headers, min(self.timeout, max(left, MIN_ATTEMPT_SECONDS)))
        except _Failure as exc:
            tries = f" after {attempts} attempts" if attempts > 1 else ""
            raise NotifyError(
                f"webhook notifier {self.name} ({self.origin}): {exc}{tries}"
            ) from None
        logger.debug("webhook notifier %s delivered to %s", self.name, self.origin)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "riverbed"}
        for key, secret in self._secret_headers.items():
            try:
                headers[key] = secret.reveal()
            except ValueError as exc:  # names the variable or file, never a value
                raise NotifyError(
                    f"notifiers.{self.name}.headers.{key}: {exc}; set it where riverbed runs"
                ) from None
        headers["Content-Type"] = "application/json"  # the body is JSON whatever else is set
        return headers

    def _post(self, body: bytes, headers: dict[str, str], timeout: float) -> None:
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            status = exc.code
            if 300 <= status < 400:
                raise _Failure(
                    f"answered HTTP {status} (a redirect, not followed: set url to the final "
                    "address)",
                    transient=False,
                ) from None
            raise _Failure(
                f"answered HTTP {status}",
                transient=status >= 500 or status == 429,
                retry_after=_retry_after(exc.headers.get("Retry-After")),
            ) from None
        except urllib.error.URLError as exc:
            raise _Failure(f"cannot connect ({_reason(exc.reason)})", transient=True) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-response
            raise _Failure(f"no valid response ({_reason(exc)})", transient=True) from None

    def _wait(self, state: RetryCallState) -> float:
        """The exponential backoff, or longer if the receiver asked for it (up to max_wait)."""
        backoff = float(
            wait_exponential(multiplier=self.backoff_seconds, max=MAX_BACKOFF_SECONDS)(state)
        )
        failure = state.outcome.exception() if state.outcome else None
        asked = failure.retry_after if isinstance(failure, _Failure) else None
        return backoff if asked is None else min(max(backoff, asked), self.max_wait)

    def _log_retry(self, state: RetryCallState) -> None:
        problem = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.info(
            "webhook notifier %s (%s): %s; retrying in %.3g s (attempt %d)",
            self.name,
            self.origin,
            problem,
            wait,
            state.attempt_number,
        )


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: the part of a webhook address that is safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0  # a malformed port; the request will fail and say so
    return f"{parts.scheme}://{host}:{port}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from now that a ``Retry-After`` value asks for (RFC 9110: a number of seconds
    or an HTTP date); None for no header or one that is neither."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _reason(reason: object) -> str:
    # a library message may quote the address; keep only the error's kind and the OS's words
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__
