"""The real thing: gunicorn with several workers, over HTTP, on real PostgreSQL."""

from collections import Counter
from decimal import Decimal

import pytest

from tests.helpers import assert_conserved, assert_invariants, commit_item, run_together, shop_state
from tests.system.server import HttpClient, Server

pytestmark = pytest.mark.slow


# Both safe strategies, pays combined and alone, in the default gevent workers;
# the threaded workers (GUNICORN_WORKER_CLASS=gthread) with the default strategy.
@pytest.fixture(
    params=[(s, c, "gevent") for s in ("for_update", "atomic") for c in ("true", "false")]
    + [("for_update", c, "gthread") for c in ("true", "false")],
    ids=lambda p: f"{p[0]}-{'combined' if p[1] == 'true' else 'alone'}-{p[2]}",
)
def server(request, database_url, committed):
    strategy, combining, worker_class = request.param
    server = Server(
        database_url,
        STOCK_STRATEGY=strategy,
        PAY_COMBINING=combining,
        GUNICORN_WORKER_CLASS=worker_class,
    )
    server.flask("db", "upgrade")
    server.flask("seed")
    server.start()
    yield server
    server.stop()


def test_the_design_notes_curl_flow_over_http(server):
    http = HttpClient(server.port)
    # The note's three commands, verbatim but for the port.
    added = http.request("POST", "/cart/user123/add", '{"item_id": 1, "quantity": 2}')
    assert added.status == 200, added.body
    quote = http.request("GET", "/cart/user123/checkout")
    assert quote.status == 200 and quote.body["total"] == "1.00"
    paid = http.request("POST", "/cart/user123/pay", '{"amount": 1.00}')
    assert paid.status == 201, paid.body
    assert paid.body["status"] == "paid"
    assert http.request("GET", "/items/1").body["stock"] == "8.00"
    # Errors are JSON from gunicorn too, never an HTML page.
    missing = http.request("GET", "/no/such/page")
    assert missing.status == 404 and missing.error_code == "not_found"
    http.close()


def test_storm_of_buyers_through_gunicorn(server, committed):
    stock, buyers = 10, 60
    hot = commit_item(committed, "Flash-sale phone", "199.00", stock)

    def buyer(n: int) -> list[tuple[str, int, str | None]]:
        http = HttpClient(server.port)
        user = f"storm{n}"
        steps = []
        r = http.request("POST", f"/cart/{user}/add", {"item_id": hot, "quantity": 1})
        steps.append(("add", r.status, r.error_code))
        if r.status == 200:
            r = http.request("GET", f"/cart/{user}/checkout")
            steps.append(("checkout", r.status, r.error_code))
            r = http.request("POST", f"/cart/{user}/pay", {"amount": "199.00"})
            steps.append(("pay", r.status, r.error_code))
        http.close()
        return steps

    results = run_together([lambda n=n: buyer(n) for n in range(buyers)])

    steps = [step for result in results for step in result]
    assert not [s for s in steps if s[1] >= 500], steps
    outcomes = Counter((name, status, code) for name, status, code in steps if name != "checkout")
    assert outcomes[("pay", 201, None)] == stock, outcomes
    refusals = (
        outcomes[("pay", 409, "insufficient_stock")] + outcomes[("add", 409, "insufficient_stock")]
    )
    assert refusals == buyers - stock, outcomes
    after = shop_state(committed)
    assert after.stock[hot] == 0 and after.orders == stock
    assert_conserved({hot: Decimal(stock)}, after)
    assert_invariants(committed)
