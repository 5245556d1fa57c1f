"""A fair waiting room in front of a hot item's add and pay.

The state lives in PostgreSQL, so every instance sees one line
(ecommerce/repositories/rooms.py); the rules are pure
(ecommerce/domain/queueing.py); each worker caches the fronts of the open lines
and their arrival numbers (ecommerce/services/roomboard.py). By subject:

* :mod:`.line`, the fronts and the refresher: the worker that finds a room's
  refresh due and takes its row without waiting (SKIP LOCKED) draws a random
  room's early buyers once the sale opens, admits the next places as the
  in-flight cap, the stock and a fixed rate allow, finds the first place the
  stock cannot reach, and writes the counters on the room's own row; every
  refresh then reads the open rooms and, in one statement, the arrival numbers
  each line has gained.
* :mod:`.places`, the buyer's side: joining is one INSERT (its arrival number
  the column's default, ``nextval`` of the one sequence of migration 0009; ON
  CONFLICT DO NOTHING: one place per buyer): no lock waited for, the item's row
  untouched, the answer at once. Polling reads the place token and this
  worker's view: no statement while the place waits.
* :mod:`.admissions`, add and pay of a roomed item need an admission token of
  the buyer's for it, judged in their batches; a pay that sells it marks the
  place done, and an admission that lapses no longer counts.
* :mod:`.operator`, the admin's side: open, change, close and show a room.

No statement of the waiting room makes a schema object: the schema changes
only through migrations.
"""

from __future__ import annotations

from ecommerce.services.rooms.admissions import (
    admission_refusal,
    admitted_items,
    admitted_places,
    join_path,
    mark_paid,
    queue_required,
    roomed_items,
)
from ecommerce.services.rooms.line import front, fronts
from ecommerce.services.rooms.operator import (
    RoomOptions,
    RoomView,
    configure_room,
    room,
    room_view,
)
from ecommerce.services.rooms.places import PlaceView, join, leave, poll

__all__ = [
    "PlaceView",
    "RoomOptions",
    "RoomView",
    "admission_refusal",
    "admitted_items",
    "admitted_places",
    "configure_room",
    "front",
    "fronts",
    "join",
    "join_path",
    "leave",
    "mark_paid",
    "poll",
    "queue_required",
    "room",
    "room_view",
    "roomed_items",
]
