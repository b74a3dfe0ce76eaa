"""The dashboard and the claim page in a real browser: Debian's Chromium, headless, driven by
Playwright for Python, against ``promoguard serve`` running as its own process.

One story, as people would live it: an approver logs in and approves a version; an operator
takes it live, watches the campaign's orders chart move as orders come in, sees the quote
route's p99 on the service health page, halves the rollout, pauses the campaign, opens an
incident by hand, takes it and approves its remediation plan; a customer applies for
compensation on the claim page (in English) and the operator approves the claim; the customer
sees the answer.

Every page visited is saved as a screenshot (under the test's tmp dir, and into
``PROMOGUARD_UI_SCREENSHOTS`` when set), must log no console error, and must pass axe-core's
WCAG 2 A/AA rules (contrast and labels among them; axe-core comes with the pinned PyPI package
``axe-playwright-python``). Without Chromium the test is skipped, unless
``PROMOGUARD_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.service.conftest import SECRET, make_key
from tests.service.helpers import approver, catalogue, line, submit, threshold
from tests.serving import serving

from promoguard.security.signing import PromoguardAuth
from promoguard.settings import Settings
from promoguard.store import migrate

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CART = [line("sku-8", 30000)]


def _key(settings: Settings, role: str, **options: Any) -> tuple[str, str]:
    # In a thread: Playwright's sync API runs an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make_key, settings, role, **options).result()


def _missing(what: str) -> None:
    message = (
        f"{what}: the browser test of the dashboard is skipped. Install Chromium with "
        "`apt-get install chromium` and the test extra (`pip install -e '.[test]'`), "
        "or run .ci/run."
    )
    if os.environ.get("PROMOGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        _missing(f"Debian's Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        _missing("Playwright for Python is not installed")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Visit:
    """Saves each page, and checks it has no console errors and passes axe's WCAG rules."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.extra = os.environ.get("PROMOGUARD_UI_SCREENSHOTS")
        self.errors: list[str] = []
        self.axe = (resources.files("axe_playwright_python") / "axe.min.js").read_text()
        self.shots: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(30_000)  # a ceiling for a loaded CI machine, not a measurement
        return page

    def check(self, page: Any, name: str) -> None:
        page.wait_for_load_state("load")
        path = self.out / f"{len(self.shots):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path.name)
        if self.extra:
            Path(self.extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.extra) / path.name)
        # Evaluated through the DevTools protocol, so the pages' script policy does not apply.
        page.evaluate(self.axe)
        result = page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG
        )
        problems = [
            f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
        ]
        assert problems == [], f"{name}: accessibility violations {problems}"
        assert {"color-contrast", "label"} <= {
            r["id"] for r in result["passes"] + result["inapplicable"] + result["incomplete"]
        }, f"{name}: axe did not run its contrast and label rules"
        assert self.errors == [], f"{name}: console errors {self.errors}"


def _log_in(page: Any, visit: Visit, base: str, key: tuple[str, str], first: bool = False) -> None:
    page.goto(f"{base}/ui/login")
    if first:
        visit.check(page, "login")
    page.get_by_label("Key id").fill(key[0])
    page.get_by_label("Secret").fill(key[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/ui/campaigns$"))


def _log_out(page: Any) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/ui/login"))


def _buy(api: httpx.Client, n: int, prefix: str) -> list[str]:
    orders = []
    for i in range(n):
        quoted = api.post(
            "/v1/quotes", json={"customer": {"id": f"{prefix}-{i}"}, "cart": {"lines": CART}}
        )
        assert quoted.status_code == 200, quoted.text
        placed = api.post(
            "/v1/orders",
            json={"quote_token": quoted.json()["quote_token"]},
            headers={"Idempotency-Key": f"{prefix}-{i}"},
        )
        assert placed.status_code == 201, placed.text
        paid = api.post(f"/v1/orders/{placed.json()['id']}/events", json={"type": "paid"})
        assert paid.status_code == 200, paid.text
        orders.append(placed.json()["id"])
    return orders


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    """``promoguard serve`` on a fresh SQLite file, with no alert rules (the pause is ours)."""
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    migrate.upgrade(url)
    rules = tmp_path / "no-rules.toml"
    rules.write_text("")
    env = {
        "PROMOGUARD_DATABASE_URL": url,
        "PROMOGUARD_SECRET_KEY": SECRET,
        "PROMOGUARD_ENVIRONMENT": "test",
        "PROMOGUARD_RULES_REFRESH_SECONDS": "0.2",
        "PROMOGUARD_MONITOR_RULES_PATH": str(rules),
        "PROMOGUARD_QUEUE_PATH": str(tmp_path / "queue.db"),
        "PROMOGUARD_INCIDENT_CHECK_SECONDS": "3600",
    }
    with serving(env) as base:
        yield base, Settings(database_url=url, environment="test", secret_key=SECRET)


def _in_review(settings: Settings, api: httpx.Client) -> None:
    """满200减20 in review, approved by engineering and product through the API."""
    api.settings = settings  # type: ignore[attr-defined]  # the helpers' approver keys
    assert api.put("/v1/catalogue", json=catalogue()).status_code == 200
    created = api.post("/v1/campaigns", json={"spec": threshold(spend=20000, off=2000)})
    assert created.status_code == 201, created.text
    submit(api, "mj")  # type: ignore[arg-type]
    for department in ("engineering", "product"):
        decided = api.post(
            "/v1/campaigns/mj/versions/1/approvals",
            json={"decision": "approve"},
            auth=approver(api, department),  # type: ignore[arg-type]
        )
        assert decided.status_code == 200, decided.text


def _approve_version(page: Any, visit: Visit, base: str, key: tuple[str, str]) -> None:
    """An approver of marketing approves version 1 from the campaign's page."""
    _log_in(page, visit, base, key, first=True)
    visit.check(page, "campaigns")
    page.get_by_role("link", name="mj").first.click()
    page.get_by_label("Reason (optional when approving)").fill("tiers match the brief")
    page.get_by_label("I have read the diff and the findings of version 1 for marketing").check()
    page.get_by_role("button", name="Approve version 1").click()
    page.get_by_text("Version 1 approved for marketing; it is approved now.").wait_for()
    visit.check(page, "campaign-approved")
    _log_out(page)


def _health(page: Any, visit: Visit) -> None:
    """The quotes just made show on the service health page: requests and a p99."""
    page.get_by_role("link", name="Service health").click()
    quotes = page.locator('tr[data-route="/v1/quotes"]')
    quotes.wait_for(timeout=20_000)  # stored within a second or so; the page polls every 2 s
    assert int(quotes.locator("td.requests").inner_text()) >= 3
    p99 = quotes.locator("td.p99").inner_text()
    assert re.fullmatch(r"[0-9,]+\.[0-9] ms", p99), p99
    assert p99 != "0.0 ms"
    assert page.locator("#all-p99 desc").text_content().startswith("61 minutes; latest ")
    visit.check(page, "health")


def _watch_and_pause(page: Any, visit: Visit, base: str, api: httpx.Client) -> list[str]:
    """Orders move the live chart and the service health; the rollout is halved; then the kill
    switch. Returns the orders."""
    page.goto(f"{base}/ui/campaigns/mj")
    assert page.locator("#orders-total").inner_text() == "0"
    orders = _buy(api, 3, "c")
    page.locator("#orders-total").filter(has_text="3").wait_for(timeout=20_000)
    assert page.locator("#discount-total").inner_text() == "¥60.00"
    visit.check(page, "campaign-live-chart")
    _health(page, visit)
    page.goto(f"{base}/ui/campaigns/mj")
    page.get_by_label(re.compile(r"^Share of customers, in percent")).fill("50")
    page.get_by_label("Why (optional, for the timeline)").fill("halve it while we look")
    page.get_by_label("Yes, change the rollout of mj").check()
    page.get_by_role("button", name="Change rollout").click()
    page.locator("#campaign-rollout").filter(has_text="50.00 %").wait_for()
    visit.check(page, "campaign-rollout")
    page.get_by_label("Why pause it (for the timeline and the audit log)").fill("tiers look off")
    page.get_by_label("Yes, stop pricing with mj now").check()
    page.get_by_role("button", name="Pause campaign").click()
    page.locator("#campaign-status").filter(has_text="paused").wait_for()
    visit.check(page, "campaign-paused")
    page.get_by_role("link", name="Alerts").click()
    visit.check(page, "alerts")
    return orders


def _incident_and_plan(page: Any, visit: Visit, base: str, api: httpx.Client, operator: str) -> int:
    """The operator opens the incident by hand and takes it; its plan (drafted by the shop's
    admin key) is approved by the operator, who did not write it. Returns the plan."""
    page.get_by_role("link", name="Incidents").click()
    visit.check(page, "incidents")
    page.get_by_label("Title").fill("满200减20 keyed for every cart")
    page.get_by_label(re.compile(r"^At least this severe")).select_option("P2")
    page.get_by_label(re.compile(r"^Campaign versions")).fill("mj:1")
    page.get_by_label("Yes, open an incident and start its clocks").check()
    page.get_by_role("button", name="Open incident").click()
    page.wait_for_url(re.compile(r"/ui/incidents/[0-9]+$"))
    incident = int(page.url.rsplit("/", 1)[1])
    opened = api.get(f"/v1/incidents/{incident}").json()
    assert (opened["versions"], opened["opened_by"]) == ([["mj", 1]], operator)
    page.get_by_label(f"I take incident #{incident}").check()
    page.get_by_role("button", name="Acknowledge").click()
    page.locator("#incident-status").filter(has_text="acknowledged").wait_for()
    visit.check(page, "incident")
    drafted = api.post(f"/v1/incidents/{incident}/plans")
    assert drafted.status_code == 201, drafted.text
    plan: int = drafted.json()["id"]
    page.goto(f"{base}/ui/plans/{plan}")
    visit.check(page, "plan-draft")
    page.get_by_label("Reason (for the incident's timeline)").fill("honour the orders")
    page.get_by_label(f"I have checked the totals of plan {plan}").check()
    page.get_by_role("button", name="Approve plan").click()
    page.locator("#plan-status").filter(has_text="approved").wait_for()
    page.locator("#plan-progress[data-refreshed]").wait_for()  # the progress polls itself
    visit.check(page, "plan-approved")
    page.goto(f"{base}/ui/incidents/{incident}/postmortem")
    visit.check(page, "postmortem")
    return plan


def _customer_applies(customer: Any, visit: Visit, base: str, order: str) -> str:
    """A customer applies on the claim page, in English. Returns the claim."""
    customer.goto(f"{base}/claim")
    assert customer.locator("html").get_attribute("lang") == "zh-CN"
    visit.check(customer, "claim-zh")
    customer.get_by_role("link", name="English").click()
    customer.get_by_label("Order number").fill(order)
    customer.get_by_label("Customer ID").fill("c-0")
    customer.get_by_role("button", name="Look up").click()
    visit.check(customer, "claim-order")
    customer.get_by_label("Reason").select_option("other")
    customer.get_by_label("Details (optional)").fill("The parcel arrived crushed.")
    customer.get_by_role("button", name="Submit the application").click()
    customer.wait_for_load_state("load")
    assert "/claim/status/cl_" in customer.url, customer.locator("main").inner_text()
    status = customer.locator("#claim-status").get_attribute("data-status")
    assert status == "needs_review", customer.locator("main").inner_text()
    visit.check(customer, "claim-submitted")
    claim: str = customer.url.split("/claim/status/")[1].split("?")[0]
    return claim


def _operator_approves_claim(page: Any, visit: Visit, claim: str) -> None:
    """The operator approves it from the claims queue with a goodwill refund."""
    page.get_by_role("link", name="Claims").click()
    visit.check(page, "claims")
    page.get_by_role("link", name=claim).click()
    page.get_by_label("Reason (the customer sees it)").fill("Sorry about the parcel")
    page.get_by_label("Goodwill refund in yuan (only when no incident owes the order)").fill("5")
    page.get_by_label("I have checked the order and the customer's message").check()
    page.get_by_role("button", name="Approve claim").click()
    page.locator("#claim-status").filter(has_text="approved").wait_for()
    visit.check(page, "claim-approved")


def test_operators_and_a_customer_work_through_the_dashboard_in_chromium(
    browser: Any, service: tuple[str, Settings], tmp_path: Path
):
    base, settings = service
    visit = Visit(tmp_path)
    api = httpx.Client(base_url=base, auth=PromoguardAuth(*_key(settings, "admin")), timeout=30)
    _in_review(settings, api)
    page = visit.watch(browser.new_context().new_page())

    _approve_version(page, visit, base, _key(settings, "approver", department="marketing"))
    assert api.get("/v1/campaigns/mj/versions/1").json()["state"] == "approved"

    operator = _key(settings, "operator", owner="ops")
    _log_in(page, visit, base, operator)
    page.goto(f"{base}/ui/campaigns/mj")
    page.get_by_label("Yes, take version 1 of mj live now").check()
    page.get_by_role("button", name="Take version 1 live").click()
    page.locator("#campaign-status").filter(has_text="live").wait_for()
    orders = _watch_and_pause(page, visit, base, api)
    paused = api.get("/v1/audit", params={"action": "campaign.paused"}).json()
    assert [(e["key_id"], e["detail"].get("reason")) for e in paused] == [
        (operator[0], "tiers look off")
    ]

    plan = _incident_and_plan(page, visit, base, api, operator[0])
    decided = api.get(f"/v1/plans/{plan}").json()
    assert (decided["status"], decided["decided_by"]) == ("approved", operator[0])

    customer = visit.watch(browser.new_context().new_page())
    claim = _customer_applies(customer, visit, base, orders[0])
    _operator_approves_claim(page, visit, claim)
    assert operator[0] in page.locator("table").last.inner_text()  # the history names the key
    customer.reload()
    customer.locator("#claim-status").filter(has_text="Approved, payment on its way").wait_for()
    assert "¥5.00" in customer.locator("dl").inner_text()
    visit.check(customer, "claim-answered")
    assert len(visit.shots) == 19
