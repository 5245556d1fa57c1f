"""A 12.12 crowd through HAProxy (deploy/haproxy/haproxy.cfg as it is, three
instances) into an item's waiting room: each buyer on a connection of its own
joins, polls as told, adds and pays with its admission when let in, and
retries a 503 with its keys (ecommerce/crowd/). Then, from a separate
connection: the units went to the first arrivals, nobody was sold a unit
without an admission, nothing was oversold or charged twice, and every buyer
had a final answer without a connection error or a 5xx other than 503."""

import os
import shutil

import pytest
from sqlalchemy import text

from ecommerce.crowd.client import PAID, SOLD_OUT
from ecommerce.crowd.run import CrowdConfig, run_crowd_sale

pytestmark = [
    pytest.mark.slow,
    pytest.mark.server_independent,
    pytest.mark.skipif(
        not (shutil.which("haproxy") or os.path.exists("/usr/sbin/haproxy")),
        reason="HAProxy is not installed (apt-get install haproxy; .ci/run installs it)",
    ),
]


def test_a_crowd_through_haproxy_is_served_in_arrival_order(database_url, committed, tmp_path):
    stock = 60
    config = CrowdConfig(
        buyers=400, stock=stock, arrival_s=2.0, via="haproxy", room=True, max_admitted=20
    )
    crowd = run_crowd_sale(database_url, config, workdir=tmp_path)

    assert crowd.correct, crowd.invariant_violations
    assert set(crowd.outcomes) <= {PAID, SOLD_OUT}, crowd.outcomes
    assert crowd.paid == stock
    assert crowd.buyers_with_connection_errors == 0
    assert crowd.buyers_with_server_errors == 0
    assert crowd.queue_required == 0
    # Joins through three instances number the places in arrival order, give
    # or take the requests in flight at one moment.
    assert crowd.first_arrivals_served >= 0.9, crowd.first_arrivals_served
    with committed.connect() as conn:
        unadmitted = conn.execute(
            text(
                "SELECT count(*) FROM orders o WHERE o.status = 'paid' AND NOT EXISTS ("
                " SELECT 1 FROM queue_places q WHERE q.user_id = o.user_id"
                " AND q.admitted_at IS NOT NULL AND q.done_at IS NOT NULL)"
            )
        ).scalar_one()
        paid = conn.execute(text("SELECT count(*) FROM orders WHERE status = 'paid'")).scalar_one()
    assert (paid, unadmitted) == (stock, 0)
