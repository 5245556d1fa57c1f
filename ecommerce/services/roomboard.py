"""This process's view of the open waiting rooms: which items have one, and the
front of each line, read from the database at most every ``refresh_s``
(QUEUE_REFRESH_MS) by whichever request finds it stale (ecommerce/services/rooms.py).

A poll is answered from here with no statement at all; an add or a pay of an
item without a room costs nothing more than a dictionary look-up (and, at most
every ``refresh_s``, the one statement that reads the open rooms). One request
refreshes at a time; the others meanwhile use the view they have.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ecommerce.domain.queueing import Front


@dataclass(frozen=True)
class RoomFront:
    """An open room as the last refresh read it."""

    item_id: int
    mode: str
    front: Front
    in_flight: int
    line_length: int
    max_admitted: int
    admission_ttl_s: int


class RoomBoard:
    def __init__(self, refresh_s: float = 0.2) -> None:
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._fronts: dict[int, RoomFront] | None = None
        self._read_at = 0.0
        self._refreshing = False

    def fresh(self) -> dict[int, RoomFront] | None:
        """The fronts, if read within ``refresh_s``, or if another request of
        this process is reading them now; None: the caller must read them."""
        with self._lock:
            if self._fronts is not None and (
                time.monotonic() - self._read_at < self.refresh_s or self._refreshing
            ):
                return self._fronts
            self._refreshing = True
            return None

    def store(self, fronts: dict[int, RoomFront] | None) -> None:
        """What the caller of :meth:`fresh` read (None: it failed; the next
        request tries again)."""
        with self._lock:
            self._refreshing = False
            if fronts is not None:
                self._fronts = fronts
                self._read_at = time.monotonic()

    def invalidate(self) -> None:
        """Read the rooms again at the next request (an admin changed one here)."""
        with self._lock:
            self._read_at = 0.0
            self._refreshing = False
