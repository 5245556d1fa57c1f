"""JSON rendering of the use cases' results: the shapes the API answers with.

Money is always a string with two decimals ("1.00"); times are ISO 8601.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ecommerce.money import format_money
from ecommerce.services.console import WINDOW_S, Snapshot
from ecommerce.services.orders import OrderPage
from ecommerce.services.results import (
    CartView,
    ItemAccountView,
    ItemView,
    LineView,
    OrderView,
)
from ecommerce.services.rooms import PlaceView, RoomView


def item_json(item: ItemView) -> dict[str, Any]:
    return {
        "id": item.id,
        "name": item.name,
        "price": format_money(item.price),
        "stock": format_money(item.stock),
        "per_user_limit": item.per_user_limit,
        "sale_starts_at": _time(item.sale_starts_at),
        "sale_ends_at": _time(item.sale_ends_at),
    }


def item_sales_json(sales: ItemAccountView) -> dict[str, Any]:
    return {
        "item_id": sales.id,
        "available": format_money(sales.available),
        "reserved": sales.reserved,
        "sold": sales.sold,
        "refunded": sales.refunded,
        "revenue": format_money(sales.revenue),
        "orders": sales.orders,
    }


def console_json(snapshot: Snapshot) -> dict[str, Any]:
    """One event of the console's stream (ecommerce/static/console.js reads it)."""
    p50, p99 = snapshot.pay_latency_s
    return {
        "at": snapshot.at.isoformat(),
        "items": [
            {
                "id": i.id,
                "name": i.name,
                "price": format_money(i.price),
                "available": format_money(i.available),
                "reserved": i.reserved,
                "sold": i.sold,
                "refunded": i.refunded,
                "pays_per_s": round(i.recent / WINDOW_S, 1),
                "per_user_limit": i.per_user_limit,
                "sale_starts_at": _time(i.sale_starts_at),
                "sale_ends_at": _time(i.sale_ends_at),
                "on_sale": i.id not in snapshot.off_sale,
                "room": room_json(r) if (r := snapshot.rooms.get(i.id)) is not None else None,
            }
            for i in snapshot.items
        ],
        "pays_per_s": round(sum(i.recent for i in snapshot.items) / WINDOW_S, 1),
        "refusals_per_s": {k: round(v, 1) for k, v in snapshot.refusals_per_s.items()},
        "pay_latency_ms": {"p50": _ms(p50), "p99": _ms(p99)},
        "batch_size": round(snapshot.batch_size, 1) if snapshot.batch_size is not None else None,
        "pending": snapshot.pending,
        "next_expiry": _time(snapshot.next_expiry),
        "database": (
            {
                "server": db.server,
                "primary": db.primary,
                "standbys": db.standbys,
                "synchronous": db.synchronous,
            }
            if (db := snapshot.database) is not None
            else None
        ),
        "instances": (
            [
                {
                    "name": i.name,
                    "status": i.status,
                    "in_service": i.in_service,
                    "sessions": i.sessions,
                }
                for i in snapshot.instances
            ]
            if snapshot.instances is not None
            else None
        ),
    }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _time(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def line_json(line: LineView) -> dict[str, Any]:
    return {
        "item_id": line.item_id,
        "name": line.name,
        "quantity": line.quantity,
        "unit_price": format_money(line.unit_price),
        "line_total": format_money(line.line_total),
    }


def order_json(order: OrderView) -> dict[str, Any]:
    return (
        {
            "order_id": order.order_id,
            "user_id": order.user_id,
            "status": order.status,
            "total": format_money(order.total),
            "created_at": order.created_at.isoformat(),
            "lines": [line_json(line) for line in order.lines],
        }
        | ({"expires_at": order.expires_at.isoformat()} if order.expires_at else {})
        | ({"refund": "pending"} if order.refund_pending else {})
    )


def pending_json(order: OrderView) -> dict[str, Any]:
    """202: the order is reserved, its payment not confirmed yet."""
    body: dict[str, Any] = {"order_id": order.order_id, "status": order.status}
    if order.expires_at is not None:
        body["expires_at"] = order.expires_at.isoformat()
    return body


def cart_json(cart: CartView) -> dict[str, Any]:
    return {
        "user_id": cart.user_id,
        "lines": [line_json(line) for line in cart.lines],
        "total": format_money(cart.total),
    }


def quote_json(cart: CartView) -> dict[str, Any]:
    """The checkout quote: the cart plus, per line, whether stock suffices right now."""
    return {
        "user_id": cart.user_id,
        "lines": [
            line_json(line)
            | {
                "available": format_money(cart.available[line.item_id]),
                "in_stock": cart.in_stock(line),
                "on_sale": cart.on_sale(line),
            }
            for line in cart.lines
        ],
        "total": format_money(cart.total),
        "can_pay": cart.can_pay,
    }


def order_page_json(user_id: str, page: OrderPage) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "orders": [order_json(o) for o in page.orders]}
    if page.next_before is not None:
        body["next_before"] = page.next_before
    return body


def place_json(place: PlaceView) -> dict[str, Any]:
    return {
        "item_id": place.item_id,
        "user_id": place.user_id,
        "status": place.status,
        "rank": place.rank,
        "position": place.position,
        "ahead": place.ahead,
        "estimated_wait_s": place.estimated_wait_s,
        "poll_after_ms": place.poll_after_ms,
        "place_token": place.place_token,
        "admission_token": place.admission_token,
        "admission_expires_at": _time(place.admission_expires_at),
    }


def room_json(room: RoomView) -> dict[str, Any]:
    return {
        "item_id": room.item_id,
        "open": room.open,
        "mode": room.mode,
        "rate_per_s": float(room.rate_per_s) if room.rate_per_s is not None else None,
        "max_admitted": room.max_admitted,
        "admission_ttl_s": room.admission_ttl_s,
        "serving": room.serving,
        "in_flight": room.in_flight,
        "line_length": room.line_length,
        "sold_out_after": room.sold_out_after,
        "admission_rate_per_s": (
            float(room.admission_rate_per_s) if room.admission_rate_per_s is not None else None
        ),
        "estimated_wait_s": room.estimated_wait_s,
        "drawn_at": _time(room.drawn_at),
        "refreshed_at": room.refreshed_at.isoformat(),
    }
