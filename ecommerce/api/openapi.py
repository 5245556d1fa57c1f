"""``GET /openapi.json``: the OpenAPI 3.1 document, generated, never hand-written.

Paths and methods come from the app's URL map, path parameters from the route
converters, bodies and answers from the models of ecommerce/api/schemas.py
(pydantic writes their JSON Schema), and what each endpoint may answer from the
:func:`documented` declaration next to its view. A test fails if a route has no
declaration, and schemathesis checks the live server against the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ecommerce.api import schemas
from ecommerce.limits import IDEMPOTENCY_HEADER

F = TypeVar("F", bound=Callable[..., Any])

#: What each error status means, for the document.
ERRORS = {
    400: "Invalid request (invalid_request): the message names the field at fault.",
    402: "The payment provider declined the charge (payment_declined); the stock went back.",
    401: "No valid bearer token (unauthorized), when authentication is on.",
    403: "The token belongs to another user (forbidden).",
    404: "No such item, order or path (not_found).",
    405: "Method not allowed (method_not_allowed), with Allow.",
    409: "Refused by the shop's state: empty_cart, insufficient_stock, conflict, "
    "idempotency_key_in_use, queue_required (the item's waiting room is open: join it, "
    "and send the admission token of your turn).",
    413: "Body over 64 KiB (payload_too_large).",
    422: "amount_mismatch, order_too_large, idempotency_key_reused.",
    503: "busy (a bounded wait ran out) or not_ready, with Retry-After: retry later.",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: dict[int, type[BaseModel] | None]  # a success status -> its model
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    token: bool = False  # a bearer token is needed when authentication is on
    admin: bool = False  # an admin token, always
    user_scoped: bool = False  # ... and it must be the path's user
    idempotent: bool = False  # takes an Idempotency-Key header
    content_type: str = "application/json"
    tags: tuple[str, ...] = field(default_factory=tuple)
    # Request headers it reads (the waiting room's tokens), each optional.
    headers: tuple[str, ...] = ()
    # A success may carry Retry-After (a waiting place: when to poll again).
    retry_after: bool = False


def documented(operation: Operation) -> Callable[[F], F]:
    def attach(view: F) -> F:
        view.openapi = operation  # type: ignore[attr-defined]
        return view

    return attach


def not_in_the_api(view: F) -> F:
    """A route for browsers (the console), not part of the API contract."""
    view.openapi = None  # type: ignore[attr-defined]
    return view


_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema = {
            "id": schemas.ID_SCHEMA,
            "order_id": schemas.ORDER_ID_SCHEMA,
        }.get(converter, schemas.USER_ID_SCHEMA)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(r"{\2}", rule), params


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _headers(status: int, operation: Operation) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "X-Request-ID": {
            "description": "The request's id: the one sent, or a new one.",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    if status == 503:
        headers["Retry-After"] = {"required": True, "schema": {"type": "string"}}
    if status == 405:
        headers["Allow"] = {"required": True, "schema": {"type": "string"}}
    if status == 401:
        headers["WWW-Authenticate"] = {"required": True, "schema": {"type": "string"}}
    if operation.retry_after and status < 300:
        headers["Retry-After"] = {
            "description": "While the place waits: seconds until the next poll.",
            "schema": {"type": "string"},
        }
    if operation.idempotent and status < 300:
        headers["Idempotent-Replayed"] = {
            "description": "true when this is the stored answer to an earlier request.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    return headers


def _operation(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in operation.answers.items():
        content: dict[str, Any] = {}
        if model is not None:
            content = {operation.content_type: {"schema": _ref(model)}}
        elif operation.content_type == "application/json":
            content = {operation.content_type: {"schema": {"type": "object"}}}
        else:
            content = {operation.content_type: {"schema": {"type": "string"}}}
        responses[str(status)] = {
            "description": operation.summary,
            "headers": _headers(status, operation),
            "content": content,
        }
    errors = set(operation.errors) | {405, 503}
    if operation.token or operation.user_scoped or operation.admin:
        errors.add(401)
    if operation.admin:
        errors.add(403)
    if operation.user_scoped:
        errors |= {400, 403}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": ERRORS[status],
            "headers": _headers(status, operation),
            "content": {"application/json": {"schema": _ref(schemas.Error)}},
        }
    spec: dict[str, Any] = {"summary": operation.summary, "responses": responses}
    if operation.tags:
        spec["tags"] = list(operation.tags)
    if operation.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    if operation.token or operation.user_scoped:
        spec["security"] = [{}, {"bearer": []}]
    if operation.admin:
        spec["security"] = [{"bearer": []}]
    return spec


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app``."""
    paths: dict[str, Any] = {}
    models: set[type[BaseModel]] = {schemas.Error}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        operation: Operation | None = app.view_functions[rule.endpoint].openapi
        if operation is None:
            continue
        path, params = _path(rule.rule)
        common = [
            {"name": "X-Request-ID", "in": "header", "schema": schemas.REQUEST_ID_SCHEMA},
        ]
        if operation.idempotent:
            common.append(
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "schema": schemas.IDEMPOTENCY_KEY_SCHEMA,
                }
            )
        for name in operation.headers:
            common.append(
                {"name": name, "in": "header", "schema": {"type": "string", "maxLength": 4096}}
            )
        entry = paths.setdefault(path, {})
        if params:
            entry["parameters"] = params
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec = _operation(operation)
            spec["operationId"] = rule.endpoint.replace(".", "_")
            spec["parameters"] = common
            entry[method.lower()] = spec
        models |= {m for m in operation.answers.values() if m is not None}
        if operation.body is not None:
            models.add(operation.body)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ecommerce: a shop backend that cannot oversell",
            "version": "1.0.0",
            "description": "Row-locked checkout on PostgreSQL. Money is a string with two "
            "decimals in answers; an amount sent may be a JSON number or a decimal string.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(models),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`flask issue-token USER_ID`; needed when AUTH_REQUIRED is on.",
                }
            },
        },
    }


def _schemas(models: set[type[BaseModel]]) -> dict[str, Any]:
    ordered = sorted(models, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [
            (m, "validation" if m in (schemas.AddToCart, schemas.Pay) else "serialization")
            for m in ordered
        ],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(top["$defs"].items()))
