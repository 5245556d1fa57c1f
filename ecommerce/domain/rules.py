"""Sale rules of an item: its window and its per-buyer limit.

* Paying for an item outside its window is refused (``sale_not_started`` with
  ``starts_at``, or ``sale_ended``); adding it to a cart is not (a buyer may
  fill the cart before the sale opens; the quote says ``on_sale: false``).
* A buyer never holds more than ``per_user_limit`` units of an item across
  their orders that hold stock: checked at pay under the cart and item locks
  (authoritative; two pays of one buyer's cart queue on its rows), and early at
  add from a plain read.

Times are compared with the shop's clock (``Shop.clock``: this process's clock
in UTC; keep instances on NTP), passed in as ``at``.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from ecommerce.errors import LimitExceeded, SaleEnded, SaleNotStarted, ShopError


class HasSaleRules(Protocol):
    @property
    def sale_starts_at(self) -> dt.datetime | None: ...
    @property
    def sale_ends_at(self) -> dt.datetime | None: ...


def on_sale(item: HasSaleRules, at: dt.datetime) -> bool:
    return window_refusal(0, "", item, at) is None


def window_refusal(
    item_id: int, name: str, item: HasSaleRules, at: dt.datetime
) -> ShopError | None:
    if item.sale_starts_at is not None and at < item.sale_starts_at:
        starts = item.sale_starts_at.isoformat()
        return SaleNotStarted(
            f"the sale of {name} starts at {starts}",
            details={"item_id": item_id, "starts_at": starts},
        )
    if item.sale_ends_at is not None and at >= item.sale_ends_at:
        return SaleEnded(
            f"the sale of {name} ended at {item.sale_ends_at.isoformat()}",
            details={"item_id": item_id, "ended_at": item.sale_ends_at.isoformat()},
        )
    return None


def limit_refusal(
    item_id: int, name: str, limit: int | None, already: int, wanted: int
) -> LimitExceeded | None:
    """``already``: units the buyer holds in orders; ``wanted``: units asked for now."""
    if limit is None or already + wanted <= limit:
        return None
    return LimitExceeded(
        f"at most {limit} of {name} per buyer; you already hold {already}",
        details={"item_id": item_id, "limit": limit, "already": already},
    )
