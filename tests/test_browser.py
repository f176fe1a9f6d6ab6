"""The admin pages in a real browser (Playwright driving Debian's Chromium) on real agents.

Two emulated Shopify shops, each with its agent process, as `shopsync demo` runs them. The
browser logs in, accepts a join request with a click, watches a purchase arrive in the sync
log without reloading, finds a duplicate, and is refused without a session or a CSRF token.

Chromium comes from Debian (`apt-get install chromium`), installed when it is missing, in the
background from the moment the tests are collected; `python -m tests.test_browser` does only
that, for a Makefile or CI step. With
SHOPSYNC_SCREENSHOTS=1 the tests also write docs/overview.png and docs/sync-log.png, and at a
phone's width docs/phone-overview.png and docs/phone-log.png.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from agent.clock import SystemClock
from agent.demo import Shop
from agent.signing import fingerprint, generate_keypair, public_key_b64
from agent.transport import signed_request
from agent.web.pages import session
from tests.support.head_start import Command, HeadStart
from tests.support.notify_sinks import Receiver, Sink, notify_table, receiving, smtp_sink

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000


# A fresh machine has no package lists yet: update them when the first install fails.
INSTALL = (
    "apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }"
)
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


INSTALL_COMMAND = Command(["sh", "-c", INSTALL], cwd=DOCS.parent, env=APT_ENV)


def head_starts(tests: set[str]) -> dict[str, Command]:
    """Install Chromium at collection when it is missing, beside the tests before these."""
    return {} if shutil.which("chromium") else {"chromium": INSTALL_COMMAND}


def ensure_chromium(started: HeadStart | None = None) -> str:
    """The path of Debian's Chromium, installing the package first when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    if started is not None:
        install = started.result(timeout=900)
    else:
        command = INSTALL_COMMAND
        install = subprocess.run(
            command.argv,
            cwd=command.cwd,
            env=command.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    found = shutil.which("chromium")
    if not found:
        pytest.fail(
            "Chromium is missing and `apt-get install chromium` did not install it: "
            + install.stderr[-2000:]
        )
    return found


class Agents:
    """The shops, an HTTP session for their APIs and emulators, the browser, and where A's
    notifications go (a webhook receiver and an SMTP sink on loopback)."""

    def __init__(
        self,
        shops: list[Shop],
        http: aiohttp.ClientSession,
        browser: Browser,
        told: tuple[Receiver, Sink],
    ) -> None:
        self.a, self.b, self.c = shops  # C joins A's group only for the three-shop account
        self.http, self.browser = http, browser
        self.receiver, self.sink = told

    async def api(self, shop: Shop, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {shop.token}"}
        async with self.http.request(
            method, shop.agent_url + path, json=body, headers=headers
        ) as resp:
            assert resp.status < 300, (path, resp.status, await resp.text())
            return await resp.json()

    async def emulator(self, shop: Shop, path: str, body: Any) -> Any:
        async with self.http.post(shop.emu_url + path, json=body) as resp:
            assert resp.status < 300, (path, resp.status, await resp.text())
            return await resp.json()

    async def skus_shown(self, shop: Shop) -> dict[str, int]:
        """Every SKU's count in `shop`'s emulator."""
        async with self.http.get(shop.emu_url + "/_emulator/inventory") as resp:
            return dict(await resp.json())

    async def skus(self, shop: Shop) -> list[str]:
        """The SKUs in `shop`'s emulator, sorted."""
        return sorted(await self.skus_shown(shop))

    async def wait_for(self, what: str, check: Any, timeout: float = 15.0) -> Any:
        """Poll the async `check` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    async def logged_in(self, shop: Shop, **options: Any) -> tuple[BrowserContext, Page]:
        """A fresh browser context, logged in to `shop`'s admin pages through the form."""
        context = await self.browser.new_context(**options)
        page = await context.new_page()
        await page.goto(shop.agent_url + "/")
        await expect(page).to_have_url(shop.agent_url + "/login")
        await page.get_by_label("Admin token").fill(shop.token)
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(shop.agent_url + "/")
        return context, page


async def _ready(agents: Agents, shop: Shop) -> bool:
    status = await agents.api(shop, "GET", "/api/status")
    return bool(status["ready"] and status["last_reconcile"] and status["idle"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agents(
    tmp_path_factory: pytest.TempPathFactory, head_started: dict[str, HeadStart]
) -> AsyncIterator[Agents]:
    """Shops A, B and C (emulator + agent processes each), not yet in a group, and Chromium;
    A notifies its alerts by webhook and e-mail."""
    chromium = ensure_chromium(head_started.get("chromium"))
    workdir = tmp_path_factory.mktemp("browser")
    shops = [Shop(i, "shopify", workdir, 8) for i in range(3)]
    with smtp_sink() as (sink, port):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            async_playwright() as playwright,
            receiving() as receiver,
        ):
            shops[0].config_extra = notify_table(receiver, port)
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                await asyncio.gather(*(s.start() for s in shops))
                agents = Agents(shops, http, browser, (receiver, sink))
                for shop in shops:
                    await agents.wait_for(f"{shop.domain} ready", lambda s=shop: _ready(agents, s))
                yield agents
            finally:
                await browser.close()  # closes the live tails before the agents stop
                await asyncio.gather(*(s.stop() for s in shops))


async def screenshot(page: Page, name: str) -> None:
    """Write docs/NAME.png for the README when SHOPSYNC_SCREENSHOTS=1."""
    if os.environ.get("SHOPSYNC_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        await page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


async def test_page_without_login_is_sent_to_log_in(agents: Agents) -> None:
    context = await agents.browser.new_context()
    page = await context.new_page()
    for path in ("/", "/products", "/log", "/requests", "/duplicates", "/import"):
        await page.goto(agents.a.agent_url + path)
        await expect(page.get_by_label("Admin token")).to_be_visible()
        assert page.url.startswith(agents.a.agent_url + "/login"), page.url
        await expect(page.locator("table")).to_have_count(0)
    await context.close()
    async with agents.http.get(agents.a.agent_url + "/log/stream", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/login")


async def test_wrong_token_does_not_log_in(agents: Agents) -> None:
    context = await agents.browser.new_context()
    page = await context.new_page()
    await page.goto(agents.a.agent_url + "/login")
    await page.get_by_label("Admin token").fill(agents.b.token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not this agent's admin token")
    assert not [c for c in await context.cookies() if c["name"] == "shopsync_session"]
    await context.close()


async def test_log_in_gives_strict_httponly_cookie_and_pages_carry_csp(agents: Agents) -> None:
    context, page = await agents.logged_in(agents.a)
    cookie = next(c for c in await context.cookies() if c["name"] == "shopsync_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert agents.a.token not in page.url and agents.a.token not in cookie["value"]
    response = await page.goto(agents.a.agent_url + "/products")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    await expect(page.locator("#products tbody tr")).to_have_count(8)
    await page.fill("#q", "sku-00003")  # the search ignores case
    await page.click("button:text('Search')")
    await expect(page.locator("#products tbody tr")).to_have_count(1)
    await expect(page.locator("main")).to_contain_text("1 SKU matching")
    await context.close()


async def test_forged_expired_or_logged_out_session_is_sent_to_log_in(agents: Agents) -> None:
    a = agents.a
    now = time.time()
    cookies = {
        "made with the token": (session.issue(a.token, now), True),
        "made with another token": (session.issue(agents.b.token, now), False),
        "expired": (session.issue(a.token, now - session.MAX_AGE - 60), False),
        "tampered": (session.issue(a.token, now)[:-2] + "AA", False),
    }
    for what, (value, accepted) in cookies.items():
        context = await agents.browser.new_context()
        await context.add_cookies([{"name": session.COOKIE, "value": value, "url": a.agent_url}])
        page = await context.new_page()
        await page.goto(a.agent_url + "/")
        landed = "/" if accepted else "/login"
        assert page.url == a.agent_url + landed, what
        await context.close()

    context, page = await agents.logged_in(a)
    old = next(c for c in await context.cookies() if c["name"] == session.COOKIE)
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(a.agent_url + "/login")
    await context.add_cookies([{"name": session.COOKIE, "value": old["value"], "url": a.agent_url}])
    await page.goto(a.agent_url + "/")
    await expect(page).to_have_url(a.agent_url + "/login")
    await context.close()


async def test_post_without_csrf_token_is_refused(agents: Agents) -> None:
    context, page = await agents.logged_in(agents.a)
    # The session cookie goes along (same browser context), the form's token does not.
    for form in ({}, {"csrf": "forged"}):
        response = await page.request.post(agents.a.agent_url + "/pause", form=form)
        assert response.status == 403
    assert (await agents.api(agents.a, "GET", "/api/status"))["paused"] is False
    # A POST without any session is refused too, token or not.
    async with agents.http.post(agents.a.agent_url + "/pause", data={"csrf": "x"}) as r:
        assert r.status == 403
    assert (await agents.api(agents.a, "GET", "/api/status"))["paused"] is False
    await context.close()


async def test_join_request_is_accepted_with_a_click_and_the_shop_joins(agents: Agents) -> None:
    a, b = agents.a, agents.b
    # B's owner sends the request from B's pages, A's owner answers on A's.
    b_context, b_page = await agents.logged_in(b)
    await b_page.goto(b.agent_url + "/requests")
    await b_page.get_by_label("The other shop's domain or agent URL").fill(a.agent_url)
    await b_page.get_by_role("button", name="Send join request").click()
    await expect(b_page.get_by_role("status")).to_contain_text("Join request sent")
    await b_context.close()

    context, page = await agents.logged_in(a)
    await page.goto(a.agent_url + "/requests")
    row = page.locator("#requests tbody tr", has_text=b.domain)
    await expect(row).to_contain_text("SHA256:")
    await row.get_by_role("button", name=f"Accept {b.domain}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"{b.domain} accepted")
    await expect(page.locator("#requests")).to_have_count(0)

    async def imported() -> bool:
        status = await agents.api(b, "GET", "/api/status")
        return status["import"].get("state") == "done"

    await agents.wait_for("B's import", imported)
    domains = [p["domain"] for p in (await agents.api(a, "GET", "/api/peers"))["peers"]]
    assert domains == [b.domain]

    async def connected() -> bool:
        peers = (await agents.api(a, "GET", "/api/peers"))["peers"]
        return peers[0]["state"] == "connected"

    await agents.wait_for("A to reach B", connected, timeout=30)
    await page.goto(a.agent_url + "/")
    peers = page.locator("#peers tbody tr", has_text=b.domain)
    await expect(peers).to_contain_text("connected")
    await screenshot(page, "overview")
    await context.close()


async def test_purchase_appears_live_in_sync_log_without_reload(agents: Agents) -> None:
    a = agents.a
    context, page = await agents.logged_in(a, viewport={"width": 1280, "height": 900})
    await page.goto(a.agent_url + "/log")
    await expect(page.locator("#synclog[data-live='1']")).to_have_count(1)
    await page.evaluate("window.notReloaded = true")
    sku = (await agents.skus(a))[2]
    shown = await page.locator("#synclog-rows tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.id))"
    )

    await agents.emulator(a, "/_emulator/orders", {"line_items": [{"sku": sku, "quantity": 3}]})

    row = page.locator("#synclog-rows tr.kind-change.fresh", has_text=sku).first
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row).to_contain_text("-3")
    assert int(await row.get_attribute("data-id") or 0) > max(shown, default=0)
    assert await page.evaluate("window.notReloaded") is True
    await screenshot(page, "sync-log")
    await context.close()


async def test_sync_log_filters_and_pages_back_by_id(agents: Agents) -> None:
    a = agents.a
    context, page = await agents.logged_in(a)
    await page.goto(a.agent_url + "/log")
    await page.get_by_label("Kind").fill("introduce")
    await page.get_by_role("button", name="Filter").click()
    kinds = await page.locator("#synclog-rows tr td:nth-child(2)").all_inner_texts()
    assert kinds and set(kinds) == {"introduce"}
    ids = [
        int(i)
        for i in await page.locator("#synclog-rows tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
    ]
    assert ids == sorted(ids, reverse=True)
    await page.goto(f"{a.agent_url}/log?kind=introduce&before_id={ids[1]}")
    older = await page.locator("#synclog-rows tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.id))"
    )
    assert older == ids[2:]
    await expect(page.locator("#synclog[data-stream]")).to_have_count(0)  # not live back there
    await context.close()


async def test_duplicate_shows_on_duplicates_page(agents: Agents) -> None:
    a = agents.a
    sku = (await agents.skus(a))[0]
    made = await agents.emulator(
        a, "/_emulator/products", {"sku": sku, "available": 5, "title": "Second of a kind"}
    )
    await agents.api(a, "POST", "/api/reconcile")

    async def excluded() -> bool:
        status = await agents.api(a, "GET", "/api/status")
        return status["excluded"] >= 2 and status["idle"]

    await agents.wait_for("the duplicate to be excluded", excluded)
    context, page = await agents.logged_in(a)
    await page.goto(a.agent_url + "/duplicates")
    rows = page.locator("#duplicates tbody tr", has_text=sku)
    await expect(rows).to_have_count(2)
    await expect(page.locator("#duplicates")).to_contain_text(str(made["inventory_item_id"]))
    await expect(rows.first).to_contain_text("own SKU")
    await context.close()


async def _in_group(agents: Agents) -> None:
    """B in A's group (the click test above does this; here for running a test alone)."""
    a, b = agents.a, agents.b
    if not (await agents.api(a, "GET", "/api/peers"))["peers"]:
        await agents.api(b, "POST", "/api/join", {"target": a.agent_url})
        await agents.api(a, "POST", f"/api/requests/{b.domain}/accept")

    async def imported() -> bool:
        return (await agents.api(b, "GET", "/api/import"))["state"] == "done"

    await agents.wait_for("B's import", imported)


async def _with_c(agents: Agents) -> None:
    """C in A's group too, its import done."""
    a, c = agents.a, agents.c
    peers = (await agents.api(a, "GET", "/api/peers"))["peers"]
    if c.domain not in {p["domain"] for p in peers}:
        await agents.api(c, "POST", "/api/join", {"target": a.agent_url})
        await agents.api(a, "POST", f"/api/requests/{c.domain}/accept")

    async def imported() -> bool:
        return (await agents.api(c, "GET", "/api/import"))["state"] == "done"

    await agents.wait_for("C's import", imported, 30)


async def test_import_progress_moves_live_to_done(agents: Agents) -> None:
    b = agents.b
    await _in_group(agents)
    context, page = await agents.logged_in(b)
    await page.goto(b.agent_url + "/import")
    await page.get_by_role("button", name="Start import").click()  # dry run: report only
    await expect(page.locator("#dry-run")).to_contain_text("SKUs whose count would be written")
    # a member's re-import: what it does with this shop's own counts is said before it runs
    await expect(page.locator("#dry-run")).to_contain_text("this shop's changes are counted first")
    assert (await agents.api(b, "GET", "/api/import"))["state"] == "done"  # nothing started

    # A slow platform (every API answer 2 s late): the import re-reads every item after the
    # start request returns, so it is still running when the page shows, whatever the
    # machine's load. (A re-import on a synced member writes nothing when the shop already
    # shows the group's counts: a fault on writes would not hold it. Refused requests would
    # not either: the pre-flight listing, which the start request awaits, would take them.)
    await agents.emulator(b, "/_emulator/faults", {"api_delay": 2.0})
    try:
        await _import_live(agents, page)
    finally:
        await agents.emulator(b, "/_emulator/faults", {"api_delay": 0.0})
    await context.close()


async def _import_live(agents: Agents, page: Page) -> None:
    b = agents.b
    await page.goto(b.agent_url + "/import")
    await page.get_by_label("Dry run only").uncheck()
    await page.get_by_role("button", name="Start import").click()
    await expect(page.get_by_role("status")).to_contain_text("Import started")
    await page.evaluate("window.notReloaded = true")
    # Rendered while running; from here on only the page's script can change what it shows.
    assert await page.locator("#import-state").inner_text() == "running"
    total = await page.locator("#import-total").inner_text()
    assert int(total) == 8

    await expect(page.locator("#import-state")).to_have_text("done", timeout=WAIT_MS)
    await expect(page.locator("#import-done")).to_have_text(total)
    assert await page.get_by_label("Items written").get_attribute("value") == total
    assert await page.evaluate("window.notReloaded") is True


PHONE = {"width": 390, "height": 844}
DESK = {"width": 1280, "height": 800}

# What does not fit a page `width` wide: the page wider, a cell or button outside it, a .scroll
# box that has to scroll; on a phone (`stacked`) a table whose rows are not stacked or whose
# cells do not name their column; at a desk a table that is not one any more.
MISFITS = """([width, stacked]) => {
  const found = [];
  const shown = el => el.getClientRects().length > 0;
  const named = el => {
    const table = el.closest('table');
    const where = !table ? '' : ` in ${table.id ? '#' + table.id : table.caption?.textContent}`;
    return `${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}"${where}`;
  };
  const page = document.documentElement.scrollWidth;
  if (page > width) found.push(`the page is ${page} px wide`);
  for (const el of document.querySelectorAll('td, th, button')) {
    const box = el.getBoundingClientRect();
    if (shown(el) && (box.left < 0 || box.right > width))
      found.push(`${named(el)} spans ${Math.round(box.left)}-${Math.round(box.right)} px`);
  }
  for (const box of document.querySelectorAll('.scroll'))
    if (stacked && box.scrollWidth > box.clientWidth)
      found.push(`${named(box.querySelector('table') || box)} scrolls sideways`);
  for (const table of document.querySelectorAll('table')) {
    const rows = [...table.querySelectorAll('tbody tr, tfoot tr')];
    const tabular = rows.filter(tr => getComputedStyle(tr).display === 'table-row');
    if (!stacked) {
      if (tabular.length < rows.length) found.push(`${named(table)} is not a table`);
      continue;
    }
    if (tabular.length || !table.classList.contains('stack-on-phone'))
      found.push(`${named(table)} does not stack its rows`);
    if (table.tHead && shown(table.tHead)) found.push(`${named(table)} shows its head row`);
    for (const cell of table.querySelectorAll('tbody td, tbody th, tfoot td, tfoot th')) {
      const label = getComputedStyle(cell, '::before').content;
      if (shown(cell) && (!cell.dataset.label || label !== JSON.stringify(cell.dataset.label)))
        found.push(`${named(cell)} does not name its column`);
    }
  }
  return found;
}"""

UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
    .filter(el => !el.labels.length && !el.getAttribute('aria-label'))
    .map(el => el.name)"""


async def _fits(page: Page, viewport: dict[str, int]) -> None:
    """Assert that the page fits `viewport`'s width (MISFITS) and every field has a label."""
    width = viewport["width"]
    where = f"{page.url} at {width} px"
    assert await page.evaluate(MISFITS, [width, width < 640]) == [], where
    assert await page.evaluate(UNLABELLED) == [], where


async def _ask_to_join(agents: Agents, shop: Shop, domain: str) -> str:
    """A join request at `shop` from an outsider's agent (a new key) for `domain`; its key."""
    key = generate_keypair()
    public = public_key_b64(key)
    body = {
        "domain": domain,
        "agent_url": f"https://stock-sync-agent.{domain}/shopsync",
        "public_key": public,
        "nonce": secrets.token_urlsafe(24),
    }
    status, answer = await signed_request(
        agents.http,
        "POST",
        shop.agent_url + "/peer/join",
        json_body=body,
        private_key=key,
        key_id=fingerprint(public),
        audience=(await agents.api(shop, "GET", "/api/status"))["fingerprint"],
        clock=SystemClock(),
    )
    assert status == 202, answer
    return fingerprint(public)


async def _with_a_duplicate(agents: Agents) -> None:
    """An item of A that shares its SKU with another (the duplicates test makes one too)."""
    a = agents.a
    if (await agents.api(a, "GET", "/api/status"))["excluded"]:
        return
    body = {"sku": (await agents.skus(a))[0], "available": 5, "title": "Its double"}
    await agents.emulator(a, "/_emulator/products", body)
    await agents.api(a, "POST", "/api/reconcile")

    async def found() -> bool:
        status = await agents.api(a, "GET", "/api/status")
        return bool(status["excluded"] and status["idle"])

    await agents.wait_for("A to find the duplicate", found)


async def _count_unheard(agents: Agents, shop: Shop, sku: str, available: int) -> int:
    """Set `sku`'s count on `shop`'s platform without its agent hearing of it (the webhook is
    dropped), as a change not read yet; return the count it had."""
    async with agents.http.get(shop.emu_url + "/_emulator/inventory") as resp:
        had = int((await resp.json())[sku])
    await agents.emulator(shop, "/_emulator/faults", {"webhook_drop": 1.0})
    try:
        await agents.emulator(shop, "/_emulator/inventory", {"sku": sku, "available": available})
    finally:
        await agents.emulator(shop, "/_emulator/faults", {"webhook_drop": 0.0})
    return had


async def test_pages_fit_a_phone_and_every_field_has_a_label(agents: Agents) -> None:
    """Every page at a phone's width and a desk's: nothing off-screen, tables stacked on the
    phone, including a join request's buttons, a row the live log adds and a dry run's report."""
    a = agents.a
    await _in_group(agents)
    await _with_a_duplicate(agents)
    skus = await agents.skus(a)
    rules = (await agents.api(a, "GET", "/api/rules"))["rules"]
    unbound = {"max": 10_000}  # above every count: a rule of a product that changes nothing
    own = {**rules, "skus": {**rules.get("skus", {}), skus[3]: unbound}}
    await agents.api(a, "POST", "/api/rules", {"rules": own})
    asking = "a-shop-with-a-rather-long-domain-name.example.com"
    key = await _ask_to_join(agents, a, asking)
    unread = skus[5]  # a count the dry run's report lists as one an import would write
    had = await _count_unheard(agents, a, unread, 1)
    try:
        for viewport in (DESK, PHONE):  # the phone last: its log shows the request rejected
            phone = viewport is PHONE
            context, page = await agents.logged_in(a, viewport=viewport)
            for path in (
                "/",
                "/requests",
                "/products",
                f"/rules?sku={skus[0]}",
                "/duplicates",
                f"/explain?sku={skus[2]}",
                "/import",
            ):
                await page.goto(a.agent_url + path)
                await _fits(page, viewport)
                if phone and path == "/":
                    await screenshot(page, "phone-overview")
            await page.get_by_role("button", name="Start import").click()  # a dry run
            await expect(page.locator("#dry-run table")).to_contain_text(unread)
            await _fits(page, viewport)
            await page.goto(a.agent_url + "/requests")
            row = page.locator("#requests tbody tr", has_text=asking)
            await expect(row.get_by_role("button", name=f"Reject {asking}")).to_be_visible()
            await page.goto(a.agent_url + "/log")
            await expect(page.locator("#synclog[data-live='1']")).to_have_count(1)
            if phone:  # a row the live tail adds
                await agents.api(a, "POST", f"/api/requests/{asking}/reject", {"fingerprint": key})
                fresh = page.locator("#synclog-rows tr.fresh", has_text=asking)
                await expect(fresh).to_have_count(1, timeout=WAIT_MS)
                await screenshot(page, "phone-log")
            await _fits(page, viewport)
            if phone:
                await page.goto(a.agent_url + "/products")
                heights = await page.locator("#products tbody tr").evaluate_all(
                    "rows => rows.map(r => r.getBoundingClientRect().height)"
                )
                # a product in four lines and a button (207 px as seven cells one under another)
                assert heights and max(heights) <= 160, heights
            await context.close()
    finally:
        await agents.emulator(a, "/_emulator/inventory", {"sku": unread, "available": had})
        await agents.api(a, "POST", "/api/rules", {"rules": rules})
        waiting = (await agents.api(a, "GET", "/api/requests"))["requests"]
        if any(r["fingerprint"] == key for r in waiting):
            await agents.api(a, "POST", f"/api/requests/{asking}/reject", {"fingerprint": key})


async def test_rules_are_set_tested_and_cleared_from_the_rules_page(agents: Agents) -> None:
    a, b = agents.a, agents.b
    context, page = await agents.logged_in(a)
    await page.goto(a.agent_url + "/rules")
    form = page.locator("#own-rules")
    await form.get_by_label("Buffer").fill("3")
    await form.get_by_label("Max shown").fill("50")
    await form.get_by_role("button", name="Save this shop's rules").click()
    await expect(page.get_by_role("status")).to_contain_text("Rules saved")
    assert (await agents.api(a, "GET", "/api/rules"))["rules"] == {"buffer": 3, "max": 50}
    # a bad value: one clear message, nothing changed
    await form.get_by_label("Percent of the count").fill("120")
    await form.get_by_role("button", name="Save this shop's rules").click()
    await expect(page.get_by_role("alert")).to_contain_text("percent must be from 0 to 100")
    assert (await agents.api(a, "GET", "/api/rules"))["rules"] == {"buffer": 3, "max": 50}
    sku_form = page.locator("#sku-rules")
    await sku_form.get_by_label("SKU or pattern").fill("SKU-0000*")
    await sku_form.get_by_label("Max shown").fill("2")
    await sku_form.get_by_role("button", name="Save the rules of these products").click()
    await expect(page.locator("#overrides")).to_contain_text("SKU-0000*")
    await page.get_by_label("Priority shop", exact=True).select_option(b.domain)
    await page.get_by_label("When the count is at most").fill("1")
    await page.get_by_role("button", name="Set for the whole group").click()
    await expect(page.locator("#priority-now")).to_contain_text(b.domain)
    await agents.wait_for(
        "b to hold the group's rule",
        lambda: _holds_priority(agents, b, {"shop": b.domain, "at_most": 1}),
    )
    await page.get_by_label("SKU", exact=True).fill("SKU-00001")
    await page.get_by_label("Count (empty: the group's count now)").fill("2")
    await page.get_by_role("button", name="Show").click()
    table = page.locator("#rules-test")
    await expect(table.locator("tr", has_text=a.domain)).to_contain_text("buffer 3: publishing 0")
    await expect(table.locator("tr", has_text=b.domain)).to_contain_text("2")
    # cleared again, as an owner would: every product shows the whole count once more
    await page.get_by_role("button", name="Remove the rules of SKU-0000*").click()
    for label in ("Buffer", "Max shown", "Percent of the count"):
        await form.get_by_label(label).fill("")
    await form.get_by_role("button", name="Save this shop's rules").click()
    await page.get_by_label("Priority shop", exact=True).select_option("")
    await page.get_by_role("button", name="Set for the whole group").click()
    await expect(page.locator("#priority-now")).to_contain_text("No priority shop")
    view = await agents.api(a, "GET", "/api/rules")
    assert view["rules"] == {} and view["priority"] is None
    await context.close()


async def test_a_bundle_is_set_and_removed_from_the_rules_page(agents: Agents) -> None:
    a = agents.a
    context, page = await agents.logged_in(a)
    await page.goto(a.agent_url + "/rules")
    form = page.locator("#bundle-form")
    await form.get_by_label("Bundle SKU").fill("CASE-6")
    await form.get_by_label("Components").fill("SKU-00001:zero")
    await form.get_by_role("button", name="Save the bundle for the whole group").click()
    await expect(page.get_by_role("alert")).to_contain_text("quantity of SKU-00001")
    assert (await agents.api(a, "GET", "/api/bundles"))["bundles"] == []  # nothing changed
    await form.get_by_label("Bundle SKU").fill("CASE-6")
    await form.get_by_label("Components").fill("SKU-00001:6")
    await form.get_by_role("button", name="Save the bundle for the whole group").click()
    await expect(page.get_by_role("status")).to_contain_text("CASE-6 is a bundle of 6 x SKU-00001")
    await expect(page.locator("#bundles")).to_contain_text("6 \u00d7 SKU-00001")
    (held,) = (await agents.api(a, "GET", "/api/bundles"))["bundles"]
    assert held["components"] == [{"sku": "SKU-00001", "quantity": 6}]
    await page.get_by_role("button", name="Remove the bundle CASE-6").click()
    await expect(page.locator("#no-bundles")).to_be_visible()
    assert (await agents.api(a, "GET", "/api/bundles"))["bundles"] == []
    await context.close()


async def test_a_products_sku_explains_its_count_term_by_term(agents: Agents) -> None:
    a, b, c = agents.a, agents.b, agents.c
    await _in_group(agents)
    await _with_c(agents)
    sku = (await agents.skus(a))[4]
    await agents.wait_for("b to count as a does", lambda: _same_pool(agents, sku))
    before = await _pool(agents, a, sku)
    # a change at each of the three shops, one after the other
    for shop, sold, after in ((b, 2, before - 2), (c, 1, before - 3), (a, 1, before - 4)):
        order = {"line_items": [{"sku": sku, "quantity": sold}]}
        await agents.emulator(shop, "/_emulator/orders", order)
        await agents.wait_for(
            f"{shop.domain}'s sale to reach a", lambda n=after: _pool_is(agents, a, sku, n)
        )
    context, page = await agents.logged_in(a, viewport={"width": 1280, "height": 900})
    await page.goto(a.agent_url + f"/products?q={sku}")
    await page.get_by_role("link", name=sku, exact=True).click()
    await expect(page.get_by_role("heading", level=2).first).to_have_text(
        f"{sku}: the group's count is {before - 4}"
    )
    account = page.locator("#account")
    await expect(account.locator("tr", has_text=b.domain)).to_contain_text("-2")
    await expect(account.locator("tr", has_text=c.domain)).to_contain_text("-1")
    await expect(account.locator("tr", has_text=a.domain).filter(has_text="-1")).to_have_count(1)
    await expect(account.locator("tfoot")).to_contain_text("the sum of the terms above")
    for shop in (a, b, c):  # what each member shows of the pool
        await expect(page.locator("#shows tr", has_text=shop.domain)).to_contain_text(
            str(before - 4)
        )
    await expect(page.locator("#recent tbody tr", has_text=b.domain).first).to_contain_text("-2")
    await expect(page.locator("#recent tbody tr", has_text=c.domain).first).to_contain_text("-1")
    # the count over time: a step line that ends at the pool, and the same in words
    chart = page.locator("#history-chart")
    await expect(chart.get_by_role("img", name="The count over time")).to_be_visible()
    await expect(chart.locator("#history-summary")).to_contain_text(
        f"The count is {before - 4} now"
    )
    history = (await agents.api(a, "GET", f"/api/explain?sku={sku}"))["history"]
    assert [p["pool"] for p in history[-4:]] == [before, before - 2, before - 3, before - 4]
    await screenshot(page, "explain")
    await context.close()


async def test_an_oversold_alert_is_the_same_at_every_member_and_clears(agents: Agents) -> None:
    a, b = agents.a, agents.b
    await _in_group(agents)
    sku = (await agents.skus(a))[6]
    await agents.emulator(a, "/_emulator/inventory", {"sku": sku, "available": 1})
    await agents.wait_for("b to show the last unit", lambda: _pool_is(agents, b, sku, 1), 30)

    async def last_unit_on_sale() -> bool:  # b's write of it landed: both shops sell it
        return (await agents.skus_shown(b))[sku] == 1

    await agents.wait_for("b's shop to offer the last unit", last_unit_on_sale, 30)
    before = [(await agents.api(s, "GET", "/api/activity"))["totals"] for s in (a, b)]
    order = {"line_items": [{"sku": sku, "quantity": 1}]}
    await asyncio.gather(*(agents.emulator(s, "/_emulator/orders", order) for s in (a, b)))

    async def alerts(shop: Shop) -> list[dict[str, Any]]:
        return (await agents.api(shop, "GET", "/api/alerts"))["alerts"]

    async def oversold_everywhere() -> bool:
        seen = [[x for x in await alerts(s) if x["kind"] == "oversold"] for s in (a, b)]
        return all(len(x) == 1 for x in seen) and seen[0][0]["message"] == seen[1][0]["message"]

    await agents.wait_for("the same oversold alert at both", oversold_everywhere, 30)
    message = f"{sku}: the group's count is -1 (1 sold more than there was)"
    await agents.wait_for("a's notification of it", lambda: _told(agents, "opened", sku), 30)
    pages = []
    for shop, width in ((a, 1280), (b, 390)):  # a desk and a phone
        context, page = await agents.logged_in(shop, viewport={"width": width, "height": 800})
        await page.goto(shop.agent_url + "/")
        alert = page.locator("#alerts li.alert[data-kind='oversold']")
        await expect(alert.get_by_role("link", name=message)).to_be_visible()
        # the activity chart counts the two sales: each made at one member, received at the other
        made, got = (before[0 if shop is a else 1][k] + 1 for k in ("local", "received"))
        changes = f"{made} change{'s' if made != 1 else ''}"
        await expect(page.locator("#changes-chart").get_by_role("img")).to_be_visible()
        await expect(page.locator("#changes-summary")).to_contain_text(
            f"{changes} made here and {got} received from peers in the last 3 hours"
        )
        await expect(page.locator("#latency-summary")).to_contain_text("p50")
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        if shop is a:
            await screenshot(page, "overview")
        pages.append((context, page, shop))
    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent.cli", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHOPSYNC_DATA_DIR": str(b.data_dir), "COLUMNS": "200"},
    )
    assert f"1 oversold ({sku})" in status.stdout, status.stdout + status.stderr
    # restocked at a: the pool is back above zero, and the alert clears at both
    await agents.emulator(a, "/_emulator/inventory", {"sku": sku, "available": 5})

    async def cleared() -> bool:
        left = [x for s in (a, b) for x in await alerts(s) if x["subject"] == sku]
        return not left

    await agents.wait_for("the alert to clear at both", cleared, 30)
    await agents.wait_for("a's notification it cleared", lambda: _told(agents, "cleared", sku), 30)
    assert agents.receiver.refused == 0  # every message signed with the shared secret
    for context, page, shop in pages:
        await page.goto(shop.agent_url + "/")
        await expect(page.locator("#no-alerts")).to_be_visible()
        log = await agents.api(shop, "GET", f"/api/log?sku={sku}&kind=alert_cleared")
        assert log["entries"][0]["message"] == f"oversold: cleared: {message}"
        await context.close()


async def _told(agents: Agents, verb: str, sku: str) -> bool:
    """A's webhook receiver and mailbox both got a message saying `sku`'s oversold alert
    `verb` (opened or cleared)."""
    hooked = any(
        (a["kind"], a["subject"]) == ("oversold", sku)
        for m in agents.receiver.messages
        for a in m.get(verb, [])
    )
    mailed = any(
        f"oversold {verb}" in (m["Subject"] or "") and sku in str(m.get_payload())
        for m in agents.sink.messages
    )
    return hooked and mailed


async def test_products_show_titles_sort_by_change_and_filter_mismatches(agents: Agents) -> None:
    a, b = agents.a, agents.b
    await _in_group(agents)
    sku = (await agents.skus(a))[7]
    await agents.wait_for("b to count as a does", lambda: _same_pool(agents, sku))
    # b's platform refuses its next call, meant to be the write of a's sale: b then shows
    # another count. (Another call of b's may come first and take the refusal: sell again.)
    for _ in range(3):
        before = await _pool(agents, b, sku)
        await agents.emulator(b, "/_emulator/faults", {"fail_requests": 1, "fail_status": 403})
        order = {"line_items": [{"sku": sku, "quantity": 1}]}
        await agents.emulator(a, "/_emulator/orders", order)

        async def settled(want: int = before - 1) -> bool:
            return await _pool_is(agents, b, sku, want) and (
                await _mismatched(agents, b, sku) or (await agents.skus_shown(b))[sku] == want
            )

        await agents.wait_for("a's sale to reach b and be written or refused", settled, 30)
        if await _mismatched(agents, b, sku):
            break
    assert await _mismatched(agents, b, sku), "b's platform never refused the write"
    context, page = await agents.logged_in(b, viewport={"width": 390, "height": 844})
    await page.goto(b.agent_url + "/products")
    await page.get_by_label("only mismatches").check()
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("#products tbody tr", has_text=sku)
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("mismatch")
    await expect(rows.first.locator("[data-label='Should show']")).to_have_text(str(before - 1))
    await expect(rows.first.locator("[data-label='Shows']")).to_have_text(str(before))
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await expect(page.locator(".legend")).to_contain_text("mismatch")
    # "Resync all" asks first; confirmed, it writes the count and the mismatch is gone
    await page.get_by_role("button", name="Resync all products").click()
    assert await page.evaluate("location.pathname") == "/products"  # the form did not go
    await page.get_by_label("re-read and re-write every product").check()
    await page.get_by_role("button", name="Resync all products").click()
    await expect(page.get_by_role("status")).to_contain_text("Resync of every SKU started")
    await agents.wait_for("the resync to write b's count", lambda: _no_mismatch(agents, b), 30)
    await context.close()
    # at the desk: titles, and the latest change first
    context, page = await agents.logged_in(a, viewport={"width": 1280, "height": 900})
    await page.goto(a.agent_url + "/products")
    await page.get_by_role("link", name="Last change").click()
    first = page.locator("#products tbody tr").first
    await expect(first.locator("th")).to_contain_text(sku)  # the one just sold
    items = await agents.api(a, "GET", f"/api/pools?sku={sku}")
    title = items["pools"][0]["title"]
    assert title
    await expect(first.locator("[data-label='Title']")).to_have_text(title)
    await context.close()


async def test_the_log_shows_local_times_and_exports_what_the_filter_matches(
    agents: Agents,
) -> None:
    a = agents.a
    context, page = await agents.logged_in(
        a, viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo"
    )
    await page.goto(a.agent_url + "/log?kind=introduce")
    await expect(page.locator("#time-head")).to_have_text("Time (local)")
    first = page.locator("#synclog-rows time").first
    utc = (await first.get_attribute("title") or "").removesuffix(" UTC")
    shown = await first.inner_text()
    assert utc and shown != utc  # Tokyo is nine hours ahead of the UTC the page was rendered in
    async with page.expect_download() as info:
        await page.get_by_role("link", name="CSV").click()
    download = await info.value
    assert download.suggested_filename == "shopsync-log-introduce.csv"
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = (await agents.api(a, "GET", "/api/log?kind=introduce&limit=1000"))["entries"]
    assert [int(r["id"]) for r in rows] == [e["id"] for e in expected]
    assert {r["kind"] for r in rows} == {"introduce"}
    # a kind the agent never writes: one clear line, no live tail, no export
    await page.goto(a.agent_url + "/log?kind=writes")
    await expect(page.get_by_role("alert")).to_contain_text("unknown kind 'writes'; one of:")
    await expect(page.locator("#synclog[data-stream]")).to_have_count(0)
    await expect(page.locator("#export")).to_have_count(0)
    refused = await page.request.get(a.agent_url + "/log/export?kind=writes&format=csv")
    assert refused.status == 400 and "unknown kind" in await refused.text()
    await context.close()


async def _mismatched(agents: Agents, shop: Shop, sku: str) -> bool:
    found = await agents.api(shop, "GET", "/api/pools?mismatch=1")
    return sku in {p["sku"] for p in found["pools"]}


async def _no_mismatch(agents: Agents, shop: Shop) -> bool:
    return not (await agents.api(shop, "GET", "/api/pools?mismatch=1"))["pools"]


async def _pool(agents: Agents, shop: Shop, sku: str) -> int:
    return int((await agents.api(shop, "GET", f"/api/explain?sku={sku}"))["pool"])


async def _same_pool(agents: Agents, sku: str) -> bool:
    return await _pool(agents, agents.a, sku) == await _pool(agents, agents.b, sku)


async def _pool_is(agents: Agents, shop: Shop, sku: str, want: int) -> bool:
    return await _pool(agents, shop, sku) == want


async def _holds_priority(agents: Agents, shop: Shop, priority: dict[str, Any]) -> bool:
    return (await agents.api(shop, "GET", "/api/rules"))["priority"] == priority


if __name__ == "__main__":
    print(ensure_chromium())
