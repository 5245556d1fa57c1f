"""The drill's room client: when it polls a waiting place, and which of the
room's answers break a phase (ecommerce/drill/storm.py, run.FaultResult)."""

from __future__ import annotations

from ecommerce.drill.run import FaultResult
from ecommerce.drill.storm import poll_delay_s


def test_a_waiting_place_is_polled_as_told_but_at_most_a_second_apart():
    assert poll_delay_s({"poll_after_ms": 250}, 1.0) == 0.25
    assert poll_delay_s({"poll_after_ms": 30_000}, 30.0) == 1.0
    assert poll_delay_s({}, 0.5) == 0.5  # no poll_after_ms: the Retry-After
    assert poll_delay_s({"poll_after_ms": 0}, 0.0) == 0.05


def test_the_rooms_refusals_break_a_phase_and_its_ordinary_answers_do_not():
    ordinary = {"joined": 9, "waited": 4, "admitted": 6, "sold_out": 2, "lapsed": 1}
    assert FaultResult("room", room=ordinary).correct
    for broken in ("queue_required", "gave up", "join refused 404 not_found"):
        result = FaultResult("room", room={**ordinary, broken: 1})
        assert result.room_refusals == 1 and not result.correct
    assert not FaultResult("room", room=ordinary, unadmitted=1).correct
