"""The account page's Credits section in a real browser against a real server process with
CREDITS_ENABLED: the balance and the 30-day chart are drawn from GET /api/me/usage, admin
text (model names) stays text, and the balance follows a grant when the window regains
focus and on the 10-second refresh."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat.credits import balances
from tests.browser import log_in, no_script_errors, screenshot
from tests.processes import live_servers
from tests.usage_rows import ledger_adds_up, spend, utc

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = '<img src=x onerror="document.title=1">'


@pytest.fixture(scope="module")
def host(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with live_servers("uvicorn", 1, CREDITS_ENABLED="1", CREDITS_INITIAL="10") as hosts:
        yield hosts[0]


@pytest.fixture(autouse=True)
def credits_on(settings):
    settings.CREDITS_ENABLED, settings.CREDITS_INITIAL = True, "10"


def test_the_account_page_draws_the_balance_and_chart_and_follows_grants(host, browser, bob, admin_user):
    today = timezone.now().astimezone(datetime.UTC).date()
    three_days_ago = today - datetime.timedelta(days=3)
    balances.grant(user=bob, credits=Decimal("2.75"), actor=admin_user, reason="")  # 12.75 in all
    spend(bob, "1.5", utc(today), model="big", input_tokens=300, output_tokens=30)
    spend(bob, "0.25", utc(today), provider="anthropic", model=HOSTILE, output_tokens=5)
    spend(bob, "2", utc(three_days_ago), model="big", input_tokens=900, output_tokens=90)
    spend(bob, "9", utc(today - datetime.timedelta(days=45)), model="old")  # outside the 30 days

    page = log_in(browser, host, "bob")
    page.clock.install()
    page.goto(f"http://{host}/account/")
    section = page.locator("#credits")
    expect(section).to_have_attribute("data-state", "on")
    expect(page.locator("#credits-available")).to_have_text("0")
    expect(page.locator("#credits-held")).to_have_text("0")

    bars = page.locator("#credits-chart svg rect.bar")
    expect(bars).to_have_count(3)
    drawn = bars.evaluate_all(
        "bars => bars.map(b => [b.dataset.date, b.dataset.model, b.dataset.credits,"
        " +b.getAttribute('height')])"
    )
    assert sorted(d[:3] for d in drawn) == sorted(
        [
            [three_days_ago.isoformat(), "big", "2.000000"],
            [today.isoformat(), "big", "1.500000"],
            [today.isoformat(), HOSTILE, "0.250000"],
        ]
    )
    heights = {(d[0], d[1]): d[3] for d in drawn}
    assert heights[(three_days_ago.isoformat(), "big")] == pytest.approx(160)  # the highest day
    assert heights[(today.isoformat(), "big")] == pytest.approx(160 * 1.5 / 2)
    # Admin-entered names are text: in the legend, the table and the bars' titles.
    expect(page.locator("#credits-legend li")).to_have_text([f"anthropic · {HOSTILE}", "openai · big"])
    assert page.locator("#credits img").count() == 0
    rows = page.locator("#credits-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_have_text(f"{three_days_ago.isoformat()}openai · big900902")
    expect(page.locator("#credits-chart svg")).to_have_attribute("role", "img")
    expect(page.locator("#credits-svg-desc")).to_contain_text("3.75 credits in all")
    screenshot(page, "account-credits")

    # The clock stands still from here: only focus can refresh until it is moved on.
    page.clock.pause_at(timezone.now() + datetime.timedelta(seconds=1))
    balances.grant(user=bob, credits=Decimal("12.5"), actor=admin_user, reason="support")
    page.evaluate("window.dispatchEvent(new Event('focus'))")
    expect(page.locator("#credits-available")).to_have_text("12.5")

    balances.grant(user=bob, credits=Decimal("0.000001"), actor=admin_user, reason="")
    page.clock.run_for(10_500)  # the 10-second refresh
    expect(page.locator("#credits-available")).to_have_text("12.500001")
    assert page.title() != "1"
    assert ledger_adds_up(bob)
    no_script_errors(page)
