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

A mark is only as new as the read it comes from. Whoever reads a stock of 0
takes :meth:`SoldOutMarks.epoch` before the read and passes it to
:meth:`~SoldOutMarks.mark`: a restock cleared after that (in this process) is
newer than the read, and the mark is not set. Without it, a batch that sold the
last unit and a restock that committed and cleared a moment before the batch
got to its mark left the item marked with stock on the shelf.
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
        self._epoch = 0  # moves at every clear
        self._cleared: dict[int, int] = {}  # item id -> the epoch of its last clear

    def any(self) -> bool:
        """Whether any item is marked (read without the lock: a mark racing with
        this call is simply seen by the next one)."""
        return bool(self._marks)

    def epoch(self) -> int:
        """Taken before reading a stock that may lead to a mark."""
        return self._epoch

    def mark(self, item_id: int, name: str, since: int) -> None:
        """Mark an item read at 0 stock by a read that began at epoch ``since``;
        an item already marked keeps its clock, and an item cleared since that
        read is not marked (the restock is newer than the read)."""
        with self._lock:
            if self._cleared.get(item_id, -1) <= since:
                self._marks.setdefault(item_id, (name, time.monotonic()))

    def _checked(self, item_id: int, name: str, since: int) -> None:
        """A re-check read the item at 0 stock: trust its mark anew from now,
        unless it was cleared since that read began."""
        with self._lock:
            if self._cleared.get(item_id, -1) <= since:
                self._marks[item_id] = (name, time.monotonic())
            else:
                self._marks.pop(item_id, None)

    def clear(self, item_id: int) -> None:
        with self._lock:
            self._marks.pop(item_id, None)
            self._epoch += 1
            self._cleared[item_id] = self._epoch

    def marked(self, session: Session, item_ids: Iterable[int]) -> dict[int, str]:
        """The marked ones among ``item_ids`` ({id: name}), re-checking stale marks."""
        if not self._marks:
            return {}
        now = time.monotonic()
        with self._lock:
            found = {i: self._marks[i] for i in item_ids if i in self._marks}
        stale = [i for i, (_, checked) in found.items() if now - checked > self.recheck_s]
        if stale:
            since = self.epoch()
            for item in ItemRepository(session).read(stale):
                if item.stock > 0:
                    self.clear(item.id)
                    found.pop(item.id)
                else:
                    self._checked(item.id, item.name, since)
        return {i: name for i, (name, _) in found.items()}
