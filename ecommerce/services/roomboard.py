"""This process's view of the open waiting rooms: which items have one, and the
front of each line, read from the database at most every ``refresh_s``
(QUEUE_REFRESH_MS) by whichever request finds it stale (ecommerce/services/rooms/),
and each line's arrival numbers (:class:`Line`), from which a place's rank and
the places ahead of it are counted in memory.

A poll is answered from here with no statement at all; an add or a pay of an
item without a room costs nothing more than a dictionary look-up (and, at most
every ``refresh_s``, the one statement that reads the open rooms). One request
refreshes at a time; the others meanwhile use the view they have.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from ecommerce.domain.queueing import Front


@dataclass(frozen=True)
class Line:
    """A room's arrival numbers as this process read them, ascending, read
    incrementally: each read asks for the numbers above :meth:`floor` only.

    A number is drawn when its join's INSERT runs and seen when that join
    commits, so a join that drew a smaller number may commit after a read that
    saw a larger one. The floor is therefore not the highest number read but
    the highest read at least ``settle_s`` ago (a join's transaction lasts less:
    the statement timeout bounds its one INSERT, and its commit is bounded too):
    every number at or below it belongs to a join that has ended, committed and
    read, or undone. The numbers above it are read again each time, which also
    forgets the places that left meanwhile."""

    seqs: tuple[int, ...] = ()
    # (monotonic time of a read, the highest number known complete then), oldest first
    marks: tuple[tuple[float, int], ...] = field(default=())

    @property
    def known_to(self) -> int:
        """The highest number this line is complete up to (as of its last read)."""
        return self.marks[-1][1] if self.marks else 0

    def floor(self, now: float, settle_s: float) -> int:
        settled = [known for at, known in self.marks if at <= now - settle_s]
        return max(settled, default=0)

    def extended(self, floor: int, above: Sequence[int], now: float, settle_s: float) -> Line:
        """This line with the numbers above ``floor`` replaced by ``above`` (read now)."""
        seqs = self.seqs[: bisect_right(self.seqs, floor)] + tuple(above)
        top = max(seqs[-1] if seqs else 0, floor, self.known_to)
        old = [mark for mark in self.marks if mark[0] <= now - settle_s]
        recent = [mark for mark in self.marks if mark[0] > now - settle_s]
        return Line(seqs, (*old[-1:], *recent, (now, top)))


@dataclass(frozen=True)
class RoomFront:
    """An open room as the last refresh read it: ``front`` in ranks of ``line``."""

    item_id: int
    mode: str
    front: Front
    in_flight: int
    line_length: int
    max_admitted: int
    admission_ttl_s: int
    line: Line = field(default_factory=Line)


class RoomBoard:
    def __init__(self, refresh_s: float = 0.2, settle_s: float = 13.0) -> None:
        self.refresh_s = refresh_s
        self.settle_s = settle_s
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

    def known(self) -> dict[int, RoomFront]:
        """The fronts last read, however old (a refresh extends their lines)."""
        with self._lock:
            return dict(self._fronts or {})

    def store(self, fronts: dict[int, RoomFront] | None) -> None:
        """What the caller of :meth:`fresh` read (None: it failed; the next
        request tries again)."""
        with self._lock:
            self._refreshing = False
            if fronts is not None:
                self._fronts = fronts
                self._read_at = time.monotonic()

    def keep(self) -> dict[int, RoomFront] | None:
        """The caller of :meth:`fresh` could not read the fronts: the last ones
        read (by any request) stand for another ``refresh_s``, one try per
        interval, not per request; None when none were ever read."""
        with self._lock:
            self._refreshing = False
            if self._fronts is None:
                return None
            self._read_at = time.monotonic()
            return self._fronts

    def invalidate(self) -> None:
        """Read the rooms again at the next request (an admin changed one here)."""
        with self._lock:
            self._read_at = 0.0
            self._refreshing = False
