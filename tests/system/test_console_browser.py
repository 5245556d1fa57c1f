"""The console in a real browser (Debian's Chromium through Playwright): sign in
with a one-time link, watch a small storm move the numbers, restock from the
page, and see a forged CSRF token refused; run a waiting room from the page
while buyers join its line; and watch a database outage come and
go (banner, the fault marked on the charts). Saves a screenshot under instance/
(CONSOLE_PICTURE=docs/console.png renews the one in docs/OPERATIONS.md)."""

import os
import threading
import time

import pytest
from sqlalchemy import text

from ecommerce.config import PROJECT_ROOT
from tests.helpers import commit_cart_lines, commit_item, shop_state
from tests.system.server import HttpClient, Server

CHROMIUM = "/usr/bin/chromium"

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.server_independent,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
    ),
]


def test_the_console_in_a_browser(database_url, committed):
    idle = commit_item(committed, "Idle charger", "4.25", 5)  # listed before the hot one
    hot = commit_item(committed, "Flash-sale phone", "9.00", 300)
    buyers = [f"fan{n}" for n in range(150)]
    commit_cart_lines(committed, [(u, hot, 1) for u in buyers])
    server = Server(database_url, LOG_LEVEL="warning", WEB_CONCURRENCY="2", GUNICORN_THREADS="8")
    with server:
        base = f"http://127.0.0.1:{server.port}"
        link = server.flask("console-link", "--base-url", base).stdout.split()[-1]

        def storm() -> None:  # a steady trickle of buyers for a few seconds
            http = HttpClient(server.port)
            for user in buyers:
                http.request("POST", f"/cart/{user}/pay", {"amount": "9.00"})
                time.sleep(0.04)
            http.close()

        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(link)
            assert page.url == f"{base}/console"
            page.wait_for_selector(".connection.live", timeout=15_000)
            card = page.locator(f'article.item[data-item-id="{hot}"]')
            card.wait_for(timeout=15_000)
            assert card.locator(".available").inner_text() == "300.00"

            buying = threading.Thread(target=storm)
            buying.start()
            page.wait_for_function(
                f"""() => {{
                    const c = document.querySelector('article.item[data-item-id="{hot}"]');
                    return c && Number(c.querySelector('.sold').textContent) > 0
                        && Number(c.querySelector('.rate').textContent) > 0;
                }}""",
                timeout=20_000,
            )
            assert float(page.locator("#pays").inner_text()) > 0
            # The item that is selling comes first; every price field shows its
            # item's price (not a placeholder).
            page.wait_for_function(
                f"""() => document.querySelector('#items article.item')
                    .dataset.itemId === '{hot}'""",
                timeout=10_000,
            )
            assert card.locator('input[name="price"]').input_value() == "9.00"
            idle_card = page.locator(f'article.item[data-item-id="{idle}"]')
            assert idle_card.locator('input[name="price"]').input_value() == "4.25"
            # The database line: the primary reached, no standby; no banner.
            assert page.locator("#database").inner_text().startswith("primary ")
            assert "no standby attached" in page.locator("#database").inner_text()
            assert page.locator("#banner").is_hidden()
            # Mid-storm, a third of the buyers served and the charts under way: the
            # picture for docs/OPERATIONS.md.
            page.wait_for_function(
                f"""() => Number(document.querySelector(
                    'article.item[data-item-id="{hot}"] .sold').textContent)
                    >= {len(buyers) // 3}""",
                timeout=30_000,
            )
            # Into instance/ (the tree stays clean); CONSOLE_PICTURE=docs/console.png
            # renews the picture in docs/OPERATIONS.md.
            picture = PROJECT_ROOT / os.environ.get("CONSOLE_PICTURE", "instance/console.png")
            picture.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(picture), full_page=True)
            buying.join(60)
            sold = shop_state(committed).sold[hot]
            assert sold == len(buyers)

            # Restock from the page: available rises by 50 (from what the storm left).
            before = shop_state(committed).stock[hot]
            card.locator('input[name="quantity"]').fill("50")
            card.locator('button[data-action="restock"]').click()
            card.locator(".result").filter(has_text="done").wait_for(timeout=10_000)
            expected = before + 50
            page.wait_for_function(
                f"""() => Number(document.querySelector(
                    'article.item[data-item-id="{hot}"] .available').textContent) >= {expected}""",
                timeout=10_000,
            )

            # A forged CSRF token changes nothing.
            status = page.evaluate(
                f"""async () => (await fetch('/console/items/{hot}/restock', {{
                    method: 'POST', credentials: 'same-origin',
                    headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': 'forged'}},
                    body: JSON.stringify({{quantity: 1000}})}})).status"""
            )
            assert status == 403
            assert shop_state(committed).stock[hot] == 300 - len(buyers) + 50

            # Readable on a phone: nothing wider than the screen.
            page.set_viewport_size({"width": 390, "height": 844})
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width
            browser.close()


def test_the_console_runs_a_waiting_room(database_url, committed):
    """Open an item's waiting room from the page, watch its line grow as buyers
    join over HTTP (the figures, the sold-out cut-off, the line's chart), set
    a fixed rate and take it away, and close the room."""
    hot = commit_item(committed, "Flash-sale console", "9.00", 3)
    server = Server(database_url, LOG_LEVEL="warning", WEB_CONCURRENCY="2", GUNICORN_THREADS="8")
    with server, playwright.sync_playwright() as p:
        base = f"http://127.0.0.1:{server.port}"
        link = server.flask("console-link", "--base-url", base).stdout.split()[-1]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(link)
        page.wait_for_selector(".connection.live", timeout=15_000)
        card = page.locator(f'article.item[data-item-id="{hot}"]')
        card.wait_for(timeout=15_000)
        selector = f'article.item[data-item-id="{hot}"]'

        def shown(cls: str, expected: str) -> None:
            page.wait_for_function(
                f"""() => document.querySelector('{selector} {cls}')
                    .textContent === {expected!r}""",
                timeout=15_000,
            )

        shown(".room-state", "none")
        card.locator('select[name="mode"]').select_option("fifo")
        card.locator('button[data-room="open"]').click()
        card.locator(".room-result").filter(has_text="done: room open (fifo)").wait_for(
            timeout=10_000
        )
        shown(".room-state", "open · fifo")
        shown(".line-length", "0")

        # Ten buyers join: the stock (3) admits three, seven wait, and the
        # places behind the third are told sold out.
        http = HttpClient(server.port)
        for n in range(10):
            joined = http.request("POST", f"/items/{hot}/queue/fan{n}")
            assert joined.status == 200, joined.body
        http.close()
        shown(".line-length", "7")
        shown(".in-flight", "3")
        shown(".cutoff", "sold out after place 3")
        # The line's chart rises from nothing to its top (SVG y grows downwards).
        points = card.locator("svg.line-chart polyline").get_attribute("points").split()
        assert float(points[-1].split(",")[1]) < float(points[0].split(",")[1]), points

        # A fixed rate, then the measured pace again (an empty field).
        card.locator('input[name="rate"]').fill("2")
        card.locator('button[data-room="rate"]').click()
        card.locator(".room-result").filter(has_text="fixed 2/s").wait_for(timeout=10_000)
        page.wait_for_function(
            f"""() => document.querySelector('{selector} .admission-rate')
                .textContent.endsWith('(fixed 2)')""",
            timeout=15_000,
        )
        card.locator('input[name="rate"]').fill("")
        card.locator('button[data-room="rate"]').click()
        card.locator(".room-result").filter(has_text="measured pace").wait_for(timeout=10_000)
        page.wait_for_function(
            f"""() => document.querySelector('{selector} .admission-rate')
                .textContent.endsWith(' measured')""",
            timeout=15_000,
        )

        card.locator('button[data-room="close"]').click()
        card.locator(".room-result").filter(has_text="done: room closed").wait_for(timeout=10_000)
        shown(".room-state", "closed · fifo")
        with committed.connect() as conn:
            row = conn.execute(
                text("SELECT is_open, rate_per_s FROM rooms WHERE item_id = :i"), {"i": hot}
            ).one()
        assert (row.is_open, row.rate_per_s) == (False, None)
        browser.close()


def test_the_console_shows_a_database_outage_as_it_happens(tmp_path):
    """The console against a PostgreSQL of the test's own, which is stopped and
    started again while the page watches: a banner says no primary is reachable
    and the charts mark the fault; once the database answers, the banner goes
    and the database line is back."""
    from sqlalchemy import create_engine

    from ecommerce.database import migrations
    from ecommerce.database.embedded import ensure_database, ensure_server, server_url, stop_server

    instance = tmp_path / "pg"
    url = server_url(ensure_server(instance), "shop").render_as_string(hide_password=False)
    try:
        ensure_database(url)
        migrations.upgrade(url)
        engine = create_engine(url)
        commit_item(engine, "Phone", "9.00", 10)
        engine.dispose()
        server = Server(url, LOG_LEVEL="warning", WEB_CONCURRENCY="1", DB_CONNECT_TIMEOUT_MS="1000")
        with server, playwright.sync_playwright() as p:
            link = server.flask("console-link").stdout.split()[-1]
            link = link[link.index("/console/login") :]
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.port}{link}")
            page.wait_for_selector(".connection.live", timeout=15_000)
            page.wait_for_function(
                "() => document.querySelector('#database').textContent.startsWith('primary ')",
                timeout=15_000,
            )
            assert page.locator("#banner").is_hidden()

            stop_server(instance)
            page.wait_for_selector("#banner.down", state="visible", timeout=30_000)
            assert "No primary reachable" in page.locator("#banner").inner_text()

            ensure_server(instance)
            page.wait_for_selector("#banner", state="hidden", timeout=30_000)
            assert page.locator("svg.stock-chart line.mark.fault").count() == 1
            assert page.locator("#database").inner_text().startswith("primary ")
            browser.close()
    finally:
        stop_server(instance)
