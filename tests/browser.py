"""A real browser for the page tests: Playwright driving Debian's Chromium (or
Playwright's own where that is not installed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Error, Page, expect, sync_playwright

from tests.processes import ROOT

SYSTEM_CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
# Without these, Chromium keeps trying to reach Google's hosts on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

expect.set_options(timeout=15_000)


@contextmanager
def chromium(extra_args: list[str] | None = None) -> Iterator[Browser]:
    """A browser for a module's tests; ``extra_args`` for one with other switches, such
    as a fake microphone (``fake_microphone_args``)."""
    # Playwright's sync API keeps an event loop on this thread (driven by greenlets), so
    # Django would take every ORM call of the test for one made from async code. The
    # calls are plain blocking ones; Django documents this switch for such hosts.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with _launched(extra_args or []) as browser:
            yield browser
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextmanager
def _launched(extra_args: list[str]) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        executable = SYSTEM_CHROMIUM if os.path.exists(SYSTEM_CHROMIUM) else None
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS + extra_args)
        try:
            yield browser
        finally:
            browser.close()


def fake_microphone_args(wav: Path) -> list[str]:
    """Chromium's fake capture devices: getUserMedia is granted without asking and the
    microphone plays ``wav`` (a PCM WAV file) over and over."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]


def new_page(browser: Browser) -> Page:
    """A page in a fresh context (its own cookies), failing on any script error."""
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    errors: list[str] = []
    # The tests read them back as page.errors: an attribute of our own on Playwright's Page.
    page.errors = errors  # type: ignore[attr-defined]

    def note(error: Error) -> None:
        errors.append(str(error))

    page.on("pageerror", note)
    return page


def log_in(browser: Browser, host: str, username: str) -> Page:
    """Log in through the login form, as a person would."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    # The test process hashes with MD5 for speed; server processes know only the real
    # hashers, so give the user a password they can check.
    get_user_model().objects.filter(username=username).update(
        password=PBKDF2PasswordHasher().encode("pw-" + username, "browsertestsalt")
    )
    page = new_page(browser)
    page.goto(f"http://{host}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-" + username)
    page.click("button[type=submit]")
    expect(page.locator(".who")).to_have_text(username)
    return page


def open_live(page: Page, url: str) -> Page:
    page.goto(url)
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    return page


def chat_page(browser: Browser, host: str, username: str, channel: str = "lobby") -> Page:
    """A user's chat page of a channel, logged in and connected."""
    return open_live(log_in(browser, host, username), f"http://{host}/channel/{channel}")


def send(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def no_script_errors(*pages: Page) -> None:
    for page in pages:
        assert page.errors == []  # type: ignore[attr-defined]


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
