"""Sold-out marks: refusing buyers of a sold-out item without touching its row.

When a pay sees an item's stock reach 0, the process marks it. A later pay
whose cart holds a marked item is refused (409 insufficient_stock, available
"0.00") with no lock on the item row, so a storm that goes on after the last
unit never queues on it. A mark older than ``recheck_s`` is re-checked with a
plain read (no lock) before it is used again; a restock in this process clears
it at once, a restock elsewhere (another worker, the CLI, psql) is seen at the
next re-check, i.e. within ``recheck_s``.

A mark's clock moves only when the stock is read: marking an item that is
already marked keeps its clock. A refusal that the mark itself caused reports
the mark again (available 0) and must not restart the clock, or a storm of
such refusals would keep the mark from ever being re-read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from sqlalchemy.orm import Session

from ecommerce.repositories import ItemRepository


class SoldOutMarks:
    def __init__(self, recheck_s: float = 0.5) -> None:
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._marks: dict[int, tuple[str, float]] = {}  # item id -> (name, checked at)

    def any(self) -> bool:
        """Whether any item is marked (read without the lock: a mark racing with
        this call is simply seen by the next one)."""
        return bool(self._marks)

    def mark(self, item_id: int, name: str) -> None:
        """Mark an item seen at 0 stock; an item already marked keeps its clock."""
        with self._lock:
            self._marks.setdefault(item_id, (name, time.monotonic()))

    def _checked(self, item_id: int, name: str) -> None:
        """A re-check read the item at 0 stock: trust its mark anew from now."""
        with self._lock:
            self._marks[item_id] = (name, time.monotonic())

    def clear(self, item_id: int) -> None:
        with self._lock:
            self._marks.pop(item_id, None)

    def marked(self, session: Session, item_ids: Iterable[int]) -> dict[int, str]:
        """The marked ones among ``item_ids`` ({id: name}), re-checking stale marks."""
        if not self._marks:
            return {}
        now = time.monotonic()
        with self._lock:
            found = {i: self._marks[i] for i in item_ids if i in self._marks}
        stale = [i for i, (_, checked) in found.items() if now - checked > self.recheck_s]
        if stale:
            for item in ItemRepository(session).read(stale):
                if item.stock > 0:
                    self.clear(item.id)
                    found.pop(item.id)
                else:
                    self._checked(item.id, item.name)
        return {i: name for i, (name, _) in found.items()}
