"""The waiting room's rules (ecommerce/domain/queueing.py), without a database:
who is admitted, how many more may be, who the stock cannot reach, the wait
told, and the pre-opening draw."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections import Counter
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from ecommerce.domain.queueing import (
    Front,
    admissions_due,
    ahead,
    buyers_left,
    draw,
    estimated_wait_s,
    line_front,
    passed_over,
    poll_after_ms,
    rank_in,
    sold_out_poll_ms,
    status,
)
from ecommerce.services.roomboard import Line, RoomBoard, RoomFront

NOW = dt.datetime(2026, 12, 12, tzinfo=dt.UTC)


def front(**changes) -> Front:
    values = dict(
        serving=10,
        sold_out_after=None,
        rate_per_s=2.0,
        opens_at=None,
        drawn=True,
    )
    values.update(changes)
    return Front(**values)


def test_ranks_up_to_serving_are_admitted_the_others_wait_behind_them():
    f = front(serving=10)
    assert status(10, True, f, NOW) == "admitted"
    assert status(11, True, f, NOW) == "waiting"
    assert ahead(11, 10) == 0
    assert ahead(15, 10) == 4
    assert ahead(3, 10) == 0


def test_sold_out_beyond_the_cut_off_and_not_before_it():
    f = front(serving=10, sold_out_after=12)
    assert status(12, True, f, NOW) == "waiting"
    assert status(13, True, f, NOW) == "sold_out"
    assert status(9, True, f, NOW) == "admitted"  # already in: it is their turn


def test_a_place_passed_over_is_first_in_line_unless_the_stock_cannot_reach_it():
    # a join that committed after the refresh admitting past its number: the
    # cut-off counts the places not admitted, so it may lie below serving
    assert passed_over(4, front(serving=10, sold_out_after=None)) == "waiting"
    assert passed_over(4, front(serving=10, sold_out_after=4)) == "waiting"
    assert passed_over(4, front(serving=10, sold_out_after=3)) == "sold_out"


def test_before_the_sale_opens_nobody_is_admitted_and_a_random_room_waits_for_its_draw():
    later = NOW + dt.timedelta(minutes=5)
    assert status(1, True, front(serving=0, opens_at=later), NOW) == "waiting"
    assert status(1, False, front(serving=0, opens_at=later, drawn=False), NOW) == "before_draw"
    # drawn, but the place's own token predates the draw: its rank must be read again
    assert status(1, False, front(serving=0, drawn=True), NOW) == "redraw"


def test_buyers_left_counts_each_admitted_buyer_at_their_limit():
    assert buyers_left(stock=10, units_per_buyer=1, in_flight=3) == 7
    assert buyers_left(stock=10, units_per_buyer=3, in_flight=1) == 2  # 3 buyers of 3, one in
    assert buyers_left(stock=2, units_per_buyer=1, in_flight=5) == 0


def test_admissions_paced_by_in_flight_cap_stock_and_rate():
    # no fixed rate: fill up to max_admitted, never past what the stock can serve
    assert admissions_due(
        in_flight=3, max_admitted=10, buyers_left=100, rate_per_s=None, elapsed_s=0.2
    ) == (7, 0.0)
    assert admissions_due(
        in_flight=3, max_admitted=10, buyers_left=2, rate_per_s=None, elapsed_s=0.2
    ) == (2, 0.0)
    assert admissions_due(
        in_flight=10, max_admitted=10, buyers_left=5, rate_per_s=None, elapsed_s=0.2
    ) == (0, 0.0)
    # a fixed rate: floor(rate x elapsed); the time not yet spent is carried over
    count, carried = admissions_due(
        in_flight=0, max_admitted=100, buyers_left=100, rate_per_s=5.0, elapsed_s=0.5
    )
    assert count == 2 and abs(carried - 0.1) < 1e-9
    # an idle room does not save up a burst: at most one second's worth
    assert (
        admissions_due(
            in_flight=0, max_admitted=100, buyers_left=100, rate_per_s=5.0, elapsed_s=60
        )[0]
        == 5
    )


def test_the_wait_told_is_the_line_ahead_over_the_rate_or_unknown():
    assert estimated_wait_s(ahead=9, rate_per_s=2.0) == 5
    assert estimated_wait_s(ahead=0, rate_per_s=2.0) == 1
    assert estimated_wait_s(ahead=9, rate_per_s=None) is None
    assert estimated_wait_s(ahead=9, rate_per_s=0.0) is None


def test_poll_after_grows_with_the_wait_within_bounds():
    assert poll_after_ms(None, 1000) == 1000
    assert poll_after_ms(2, 1000) == 1000
    assert poll_after_ms(40, 1000) == 10_000
    assert poll_after_ms(10_000, 1000) == 30_000


def test_a_place_told_sold_out_polls_slowly_unless_next_in_when_units_come_back():
    assert sold_out_poll_ms(past=3, near=5, base_ms=1000, admission_ttl_s=300) == 1000
    assert sold_out_poll_ms(past=6, near=5, base_ms=1000, admission_ttl_s=300) == 30_000
    # within half an admission's life, so a unit that reaches it does not lapse unheard
    assert sold_out_poll_ms(past=6, near=5, base_ms=1000, admission_ttl_s=20) == 10_000
    assert sold_out_poll_ms(past=6, near=5, base_ms=1000, admission_ttl_s=1) == 1000


@given(
    users=st.sets(st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=8), max_size=40),
    seed=st.binary(min_size=32, max_size=32),
)
def test_the_draw_is_a_permutation_of_the_ranks_that_ignores_arrival(users, seed):
    arrivals = list(users)
    places = [(user, rank) for rank, user in enumerate(arrivals, start=1)]
    drawn = draw(seed, places)
    assert sorted(drawn.values()) == [rank for _, rank in places]
    assert set(drawn) == users
    # the same buyers arriving in the opposite order draw the same ranks
    reversed_places = [(user, rank) for rank, user in enumerate(reversed(arrivals), start=1)]
    assert draw(seed, reversed_places) == drawn


def test_the_draw_depends_on_its_seed():
    places = [(f"u{n}", n) for n in range(1, 21)]
    outcomes = {tuple(sorted(draw(secrets.token_bytes(32), places).items())) for _ in range(5)}
    assert len(outcomes) > 1


def test_a_rank_counts_the_room_s_arrival_numbers_below_it():
    seqs = [3, 8, 9, 20]  # one room's numbers: the sequence is shared by every room
    assert [rank_in(seqs, seq) for seq in seqs] == [1, 2, 3, 4]
    assert rank_in(seqs, 5) == 2  # a place the view does not hold yet, between two
    # past every number known: behind them and the places joined meanwhile
    assert rank_in(seqs, 31, unseen=2) == 7
    assert rank_in([], 1) == 1


def test_the_front_in_ranks_of_the_line():
    seqs = [3, 8, 9, 20, 21]
    # admitted up to number 9: three places; the stock cannot reach number 21
    assert line_front(seqs, 9, 21, None) == (3, 4)
    # the stock reaches every waiting place and two more to come
    assert line_front(seqs, 9, None, 2) == (3, 7)
    assert line_front(seqs, 0, None, None) == (0, None)


def test_a_line_reads_again_the_numbers_a_join_may_still_commit_below():
    line = Line().extended(0, [5, 7], now=100.0, settle_s=10.0)
    assert line.seqs == (5, 7) and line.known_to == 7
    assert line.floor(105.0, 10.0) == 0  # 7 was read 5 s ago: a join drawing 6 may be open
    # number 6 committed late and 7 left: the numbers above the floor are read again
    line = line.extended(0, [5, 6, 9], now=105.0, settle_s=10.0)
    assert line.seqs == (5, 6, 9) and line.known_to == 9
    assert line.floor(111.0, 10.0) == 7  # read at 100: every join drawing up to 7 has ended
    line = line.extended(7, [9, 12], now=111.0, settle_s=10.0)
    assert line.seqs == (5, 6, 9, 12) and line.floor(116.0, 10.0) == 9


def test_the_draw_is_uniform_every_buyer_equally_likely_at_every_rank():
    """8 early buyers, 4,000 draws with distinct seeds: how often each buyer
    drew each rank. A uniform draw gives 500 per cell; Pearson's chi-square over
    the 64 cells (49 degrees of freedom) stays below 85.4 with probability
    0.999. The seeds are fixed, so the figure is the same every run; a draw that
    favoured early arrivals (arrival order kept even 1 time in 20) lands far
    above it, as the second half shows."""
    buyers = [f"buyer{n}" for n in range(8)]
    places = [(user, rank) for rank, user in enumerate(buyers, start=1)]
    draws = 4000

    def chi_square(ranks_of: Callable[[int], dict[str, int]]) -> float:
        counts = Counter()
        for n in range(draws):
            for user, rank in ranks_of(n).items():
                counts[user, rank] += 1
        expected = draws / len(buyers)
        return sum((counts[u, r] - expected) ** 2 / expected for u in buyers for r in range(1, 9))

    def seed(n: int) -> bytes:
        return hashlib.sha256(n.to_bytes(8, "big")).digest()

    assert chi_square(lambda n: draw(seed(n), places)) < 85.4
    kept = dict(places)  # arrival order
    assert chi_square(lambda n: kept if n % 20 == 0 else draw(seed(n), places)) > 85.4


def test_a_refresh_that_failed_keeps_the_newest_view_another_request_read():
    """A worker's first requests all find no view and read the rooms at once;
    one that fails while another succeeds answers from that other's view, not
    from the empty one it started with (which would say: no room)."""
    board = RoomBoard(refresh_s=0.2)
    assert board.fresh() is None and board.fresh() is None  # two first requests read
    room = RoomFront(
        7, "fifo", front(), in_flight=0, line_length=0, max_admitted=5, admission_ttl_s=60
    )
    board.store({7: room})  # the second succeeded
    assert board.keep() == {7: room}  # the first failed: the newest view stands
    assert board.fresh() == {7: room}  # for another refresh interval
    assert RoomBoard().keep() is None  # no view was ever read: nothing to answer from
