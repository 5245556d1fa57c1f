"""For the load balancer and the dashboard: liveness, readiness, metrics.

None of them needs a token, and a request to them is logged at debug level
only, so probes and scrapes do not flood the request log.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ecommerce.api import current_shop, json_response, openapi, schemas
from ecommerce.api.openapi import Operation, documented
from ecommerce.observability import metrics
from ecommerce.services import health

bp = Blueprint("ops", __name__)

#: Endpoints whose requests are logged at debug level (ecommerce/api/observe.py).
QUIET_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics", "ops.openapi"})


@bp.get("/healthz")
@documented(
    Operation("Liveness: the process answers (no database involved).", {200: schemas.Health})
)
def healthz() -> Response:
    """Liveness: the process answers. Never touches the database."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
@documented(
    Operation(
        "Readiness: the database answers and its schema is at the head.", {200: schemas.Ready}
    )
)
def readyz() -> Response:
    """Readiness: the database answers and its schema is at the migrations' head
    (else 503 not_ready, with the reason)."""
    return json_response({"status": "ready", "schema": health.readiness(current_shop())})


@bp.get("/metrics", endpoint="metrics")
@documented(
    Operation(
        "Prometheus metrics, text format, summed over the workers.",
        {200: None},
        content_type="text/plain",
    )
)
def scrape() -> Response:
    if metrics.enabled:
        standbys = health.synchronous_standbys(current_shop())
        if standbys is not None:
            metrics.observe_synchronous_standbys(standbys)
    body, content_type = metrics.exposition()
    return Response(body, 200, content_type=content_type)


@bp.get("/openapi.json", endpoint="openapi")
@documented(Operation("This API's OpenAPI 3.1 document.", {200: None}))
def openapi_document() -> Response:
    if "openapi_document" not in current_app.extensions:
        current_app.extensions["openapi_document"] = openapi.document(current_app)
    return json_response(current_app.extensions["openapi_document"])
