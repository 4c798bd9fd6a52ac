"""``GET /metrics``: the pipeline's metrics in Prometheus text format, without a login (a
Prometheus server scrapes it; see README for what it shows). The exposition is
riverbed.observe.prometheus's ``metrics_text``, read from the state store at each scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from riverbed.observe.prometheus import CONTENT_TYPE, METRICS_PATH, StateSource, metrics_text

log = logging.getLogger(__name__)


def metrics_router(state: StateSource, refresh: Callable[[], None] | None = None) -> APIRouter:
    """The /metrics route on the state store ``state``; ``refresh`` runs before each scrape
    reads it (StateStoreCollector)."""
    router = APIRouter(include_in_schema=False)

    @router.get(METRICS_PATH)
    def metrics() -> Response:
        try:
            body = metrics_text(state, refresh)
        except Exception:
            # the scrape fails visibly (Prometheus sets up=0 for the target); the details go
            # to our log, not to whoever scrapes
            log.exception("metrics scrape failed")
            return PlainTextResponse("metrics unavailable; see the riverbed log\n", 500)
        return Response(body, media_type=CONTENT_TYPE)

    return router
