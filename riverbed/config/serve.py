"""riverbed.yaml's ``serve:`` section: the limits of the web app and API (`riverbed serve`).

Where it listens is the command line's (``--host``, ``--port``): the same config serves on a
laptop and behind a proxy. What is here bounds what one visitor can cost the server and how
long a login lasts: the rows a page or an API call returns, how long one query may run, how
long an export may be, the size of a request, the sessions' lifetimes and the lockout after
failed logins.
"""

from __future__ import annotations

from pydantic import Field

from riverbed.config.fields import Model


class ServeConfig(Model):
    # rows a page or /api/query returns at most; more is said as "truncated"
    max_rows: int = Field(1000, ge=1)
    # rows a CSV export streams at most
    max_export_rows: int = Field(1_000_000, ge=1)
    # how long one query of a page, the API or an export may run
    query_timeout_seconds: float = Field(30.0, gt=0)
    # how long a request waits for a DuckDB warehouse that a load holds before answering 503
    warehouse_wait_seconds: float = Field(1.0, ge=0)
    # the largest request body accepted (413 beyond)
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    # a session ends after this long without a request, and after session_max_hours anyway
    session_idle_minutes: float = Field(30.0, gt=0)
    session_max_hours: float = Field(12.0, gt=0)
    # failed logins (per principal, and per client address) that lock it out, and for how long
    lockout_failures: int = Field(5, ge=1)
    lockout_minutes: float = Field(5.0, gt=0)
