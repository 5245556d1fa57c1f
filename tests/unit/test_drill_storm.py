"""The drill's room client: when it polls a waiting place, and which of the
room's answers break a phase (ecommerce/drill/storm.py, run.FaultResult)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ecommerce.drill.procs import wait_for
from ecommerce.drill.run import FaultResult
from ecommerce.drill.storm import Storm, poll_delay_s


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


class _FakeShop(BaseHTTPRequestHandler):
    """A shop with a waiting room, scripted by the buyer's number (the user id's
    last part): after two waiting answers (the second with a new place token),
    0 is admitted; 1 is told its admission lapsed; 2 that the item sold out
    before its place; 3 is admitted, then its add is refused. The first join
    and the first poll of each buyer are answered 503, as during a failover."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[float, str, str, dict[str, str]]] = []  # (when, method, path, headers)

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: dict, retry_after: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        before = [p for _, m, p, _ in self.seen if (m, p) == (self.command, self.path)]
        self.seen.append((time.monotonic(), self.command, self.path, headers))
        parts = self.path.strip("/").split("/")
        if parts[0] == "items":  # /items/<id>/queue/<user>
            script = int(parts[3].rsplit("-", 1)[1]) % 4
            if not before:
                return self._answer(503, {"error": {"code": "unavailable"}}, "0")
            if self.command == "DELETE":
                return self._answer(200, {"status": "left"})
            if self.command == "POST":
                return self._answer(
                    200, {"status": "waiting", "place_token": "p1", "poll_after_ms": 200}
                )
            # The second poll must send the token the first one gave.
            if headers.get("X-Place-Token") != ("p1", "p2")[min(len(before), 2) - 1]:
                return self._answer(400, {"error": {"code": "invalid_request"}})
            if len(before) == 1:
                return self._answer(
                    200, {"status": "waiting", "place_token": "p2", "poll_after_ms": 200}
                )
            status = ("admitted", "lapsed", "sold_out", "admitted")[script]
            admission = "a-" + parts[3] if status == "admitted" else None
            return self._answer(
                200,
                {
                    "status": status,
                    "place_token": "p2",
                    "admission_token": admission,
                    "poll_after_ms": 200,
                },
            )
        user = parts[1]  # /cart/<user>/add|pay
        if headers.get("X-Admission-Token") != f"a-{user}":
            return self._answer(409, {"error": {"code": "queue_required"}})
        if parts[2] == "add":
            if int(user.rsplit("-", 1)[1]) % 4 == 3:
                return self._answer(409, {"error": {"code": "insufficient_stock"}})
            return self._answer(200, {"lines": []})
        return self._answer(201, {"order_id": len(self.seen)})

    do_GET = do_POST = do_DELETE = _handle


def test_the_room_client_retries_polls_as_told_ends_on_lapsed_and_sold_out_and_leaves():
    _FakeShop.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeShop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        storm = Storm("127.0.0.1", server.server_address[1], 7, "1.00", 1, "b-", room=True)
        storm.start()
        wait_for("eight buyers", lambda: storm.log.buyers_started >= 8, 30)
        log = storm.stop()
    finally:
        server.shutdown()
        server.server_close()
    buyers = log.buyers_started
    assert dict(log.room) == {
        "joined": buyers,
        "waited": buyers,
        "admitted": len(range(0, buyers, 4)) + len(range(3, buyers, 4)),
        "lapsed": len(range(1, buyers, 4)),
        "sold_out": len(range(2, buyers, 4)),
        "left 200": len(range(3, buyers, 4)),  # refused its add: gave the place back
    }
    paid = {f"b-{n}" for n in range(0, buyers, 4)}
    assert set(log.acknowledged) == paid < set(log.admitted)
    steps = [(step, status) for _, step, status, _, _ in log.events]
    assert steps[:7] == [
        ("join", 503),
        ("join", 200),
        ("poll", 503),
        ("poll", 200),
        ("poll", 200),
        ("add", 200),
        ("pay", 201),
    ]
    # The first poll of each place came no sooner than its poll_after_ms.
    joined = {p: t for t, m, p, _ in _FakeShop.seen if m == "POST" and p.startswith("/items")}
    for t, method, path, _ in _FakeShop.seen:
        if method == "GET":
            assert t - joined[path] >= 0.2
