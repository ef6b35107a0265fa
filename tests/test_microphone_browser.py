"""The composer's microphone in a real browser (issue 15): Chromium's fake capture device
plays a WAV made by espeak-ng, the page records it with MediaRecorder, a real server
process transcribes it (pocketsphinx) and the transcript lands in the message box. A
module of its own: its browser is launched with the fake microphone (this module's
``browser`` replaces the shared one)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import chat_page, chromium, fake_microphone_args, no_script_errors

pytestmark = pytest.mark.django_db(transaction=True)


# --- the microphone ---------------------------------------------------------------------------------

SPOKEN = "hello world. this is a test of the microphone."


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("voice") / "spoken.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(path), SPOKEN], check=True, timeout=30)
    return path


@pytest.fixture(scope="module")
def browser(spoken_wav: Path) -> Iterator[Any]:
    with chromium(fake_microphone_args(spoken_wav)) as launched:
        yield launched


def test_the_mic_button_records_and_fills_the_box_with_the_transcript(host, browser, channel, alice):
    chat = chat_page(browser, host, "alice")
    mic = chat.locator("#mic")
    expect(mic).to_be_visible()
    chat.fill("#text", "Said:")
    mic.click()
    expect(mic).to_have_attribute("data-state", "recording")
    expect(mic).to_have_attribute("aria-pressed", "true")
    # Let the fake microphone play the sentence (about three seconds) into the recorder.
    expect(mic).to_contain_text("0:04", timeout=10_000)
    mic.click()
    expect(mic).to_have_attribute("data-state", "idle", timeout=30_000)
    expect(mic).to_have_attribute("aria-pressed", "false")
    notice = chat.locator("#notice")
    assert not notice.is_visible(), notice.text_content()
    # The transcript follows what was there (exact words are not reliable: pocketsphinx
    # hears synthetic speech only partly).
    words = chat.input_value("#text")
    assert words.startswith("Said: ") and len(words.strip()) > len("Said:"), words
    print(f"transcribed: {words!r}")
    no_script_errors(chat)
