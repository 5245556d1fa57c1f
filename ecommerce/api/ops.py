"""For the load balancer and the dashboard: liveness, readiness, metrics.

None of them needs a token, and a request to them is logged at debug level
only, so probes and scrapes do not flood the request log.
"""

from __future__ import annotations

from flask import Blueprint, Response

from ecommerce import metrics
from ecommerce.api import current_shop, json_response
from ecommerce.services import health

bp = Blueprint("ops", __name__)

#: Endpoints whose requests are logged at debug level (ecommerce/api/observe.py).
QUIET_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics"})


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Never touches the database."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the database answers and its schema is at the migrations' head
    (else 503 not_ready, with the reason)."""
    return json_response({"status": "ready", "schema": health.readiness(current_shop())})


@bp.get("/metrics", endpoint="metrics")
def scrape() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, 200, content_type=content_type)
