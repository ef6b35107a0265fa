"""Uploads processed by a real Celery worker process (tests/processes.py celery_worker):
status, text, meta and the attachment_updated events in the channel's replay log; broken
and hostile files end failed with a reason; a worker child killed mid-extraction never
leaves a row processing.

Uploads are made by the create service (chat.uploads.services.create_upload: checks,
sniffing, storage, and the run queued once the row is committed), as the API makes them;
the hostile files here all pass sniffing (their types are allowed) and fail in the worker."""

from __future__ import annotations

import io
import signal
from typing import Any

import psutil
import pytest

from chat.models import Upload
from chat.uploads.services import create_upload, delete_upload
from chat.uploads.sniff import DOCX, XLSX
from tests import files
from tests.conftest import channel_events, wait_for
from tests.processes import output

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]

# A PDF whose extraction takes the worker ~2.5 s: a window to act while it is processing.
BIG_PAGES = 300


def ended(upload: Upload, timeout: float = 30) -> Upload:
    """Wait until the upload is ready or failed, and (with a channel) until that is
    published: the event follows the commit."""

    def done() -> Upload | None:
        upload.refresh_from_db()
        if upload.status not in (Upload.Status.READY, Upload.Status.FAILED):
            return None
        if upload.channel_id is not None:
            events = events_of(upload.channel, upload)
            if not events or events[-1]["status"] != upload.status:
                return None
        return upload

    return wait_for(done, timeout)


def processing(upload: Upload, *, attempts: int = 1, progress: int = 3, timeout: float = 30) -> None:
    """Wait until run ``attempts`` of the upload is under way (past ``progress`` %)."""

    def under_way() -> bool:
        upload.refresh_from_db()
        assert upload.status in ("uploaded", "processing"), (upload.status, upload.error)
        return upload.status == "processing" and upload.attempts == attempts and upload.progress >= progress

    wait_for(under_way, timeout, interval=0.01)


def events_of(channel: Any, upload: Upload) -> list[dict[str, Any]]:
    return [
        e for e in channel_events(channel) if e["type"] == "attachment_updated" and e["id"] == str(upload.pk)
    ]


def kill_child(worker: Any) -> int:
    """SIGKILL the worker's pool child (it is running the task), as the OOM killer would."""
    children = psutil.Process(worker.pid).children()
    assert len(children) == 1, children
    children[0].send_signal(signal.SIGKILL)
    return children[0].pid


def big_pdf() -> bytes:
    return files.pdf(BIG_PAGES, lines=55)


def test_text_file_becomes_ready_with_its_text_and_events(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(
        create_upload(user=alice, data_or_file=files.utf8_text(), name="notes.txt", channel=channel)
    )

    assert upload.status == "ready", upload.error
    assert "東京" in upload.text and upload.progress == 100
    assert upload.attempts == 1
    statuses = [e["status"] for e in events_of(channel, upload)]
    assert statuses[:2] == ["uploaded", "processing"] and statuses[-1] == "ready"
    last = events_of(channel, upload)[-1]
    assert {k: last[k] for k in ("type", "id", "status", "progress", "error")} == {
        "type": "attachment_updated",
        "id": str(upload.pk),
        "status": "ready",
        "progress": 100,
        "error": None,
    }


@pytest.mark.parametrize(
    ("make", "name", "mime", "expected"),
    [
        (lambda: files.pdf(10), "ten.pdf", "application/pdf", [files.page_line(1), files.page_line(10)]),
        (files.docx, "report.docx", DOCX, ["Revenue grew in the north region.", "North\t1200"]),
        (files.xlsx, "sales.xlsx", XLSX, ["# Sales", "apples\t3"]),
        (files.csv_bytes, "people.csv", "text/csv", ["Zoë,Zürich"]),
        (files.latin1_text, "french.txt", "text/plain", ["crème brûlée"]),
    ],
)
def test_documents_become_ready_with_their_text(
    worker: Any, channel: Any, alice: Any, make: Any, name: str, mime: str, expected: list[str]
) -> None:
    upload = ended(create_upload(user=alice, data_or_file=make(), name=name, channel=channel))

    assert (upload.status, upload.error, upload.mime, upload.kind) == ("ready", "", mime, "document")
    for text in expected:
        assert text in upload.text
    assert upload.meta["chars"] == len(upload.text) and upload.meta["truncated"] is False
    if mime == "application/pdf":
        assert upload.meta["pages"] == 10


def test_image_is_reencoded_without_exif(worker: Any, channel: Any, alice: Any) -> None:
    from PIL import Image

    original = files.jpeg(size=(80, 40))
    upload = ended(create_upload(user=alice, data_or_file=original, name="holiday.jpg", channel=channel))

    assert upload.status == "ready", upload.error
    assert (upload.meta["width"], upload.meta["height"]) == (40, 80)  # turned upright by its EXIF
    with upload.file.open("rb") as stored:
        data = stored.read()
    assert data != original and upload.size == len(data)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (40, 80)
    assert not image.getexif() and b"SpyCam" not in data


def test_gif_becomes_a_png_of_its_first_frame(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(create_upload(user=alice, data_or_file=files.gif(), name="anim.gif", channel=channel))

    assert (upload.status, upload.mime, upload.kind) == ("ready", "image/png", "image")
    with upload.file.open("rb") as stored:
        assert stored.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_png_named_pdf_is_processed_as_the_image_it_is(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(create_upload(user=alice, data_or_file=files.png(), name="report.pdf", channel=channel))

    assert (upload.status, upload.mime, upload.kind) == ("ready", "image/png", "image")
    assert upload.name == "report.pdf"  # shown as it came; served as what it is


def test_svg_is_kept_as_is_with_its_xml_as_text(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(create_upload(user=alice, data_or_file=files.svg(), name="logo.svg", channel=channel))

    assert (upload.status, upload.mime, upload.meta["svg"]) == ("ready", "image/svg+xml", True)
    assert "<title>A red square</title>" in upload.text
    with upload.file.open("rb") as stored:
        assert stored.read() == files.svg()


@pytest.mark.parametrize(
    ("make", "name", "reason"),
    [
        (files.encrypted_pdf, "locked.pdf", "encrypted PDF"),
        (files.broken_pdf, "broken.pdf", "broken PDF"),
        (lambda: files.zip_bomb_docx(64), "bomb.docx", "a zip bomb?"),
        (files.bomb_png, "huge.png", "image too large (10000000000 pixels)"),
    ],
)
def test_broken_and_hostile_files_end_failed_with_a_reason(
    worker: Any, channel: Any, alice: Any, make: Any, name: str, reason: str
) -> None:
    upload = ended(create_upload(user=alice, data_or_file=make(), name=name, channel=channel))

    assert upload.status == "failed"
    assert reason in upload.error
    assert upload.text == ""
    last = events_of(channel, upload)[-1]
    assert (last["status"], last["error"]) == ("failed", upload.error)


def test_progress_is_live_and_at_most_four_events_a_second(worker: Any, channel: Any, alice: Any) -> None:
    upload = ended(create_upload(user=alice, data_or_file=big_pdf(), name="big.pdf", channel=channel))

    assert upload.status == "ready" and upload.meta["pages"] == BIG_PAGES
    progress = [e["progress"] for e in events_of(channel, upload) if e["status"] == "processing"]
    assert progress[0] == 0 and len(progress) >= 4, progress  # live, not only the start and the end
    assert progress == sorted(progress) and len(set(progress)) == len(progress)
    took = (upload.updated_at - upload.created_at).total_seconds()
    assert len(progress) - 1 <= 4 * took + 1, (progress, took)


def test_upload_without_a_channel_is_processed_too(worker: Any, alice: Any) -> None:
    upload = ended(create_upload(user=alice, data_or_file=b"just text\n", name="plain.txt"))

    assert (upload.status, upload.text) == ("ready", "just text\n")


def test_upload_deleted_while_processing_stops_its_run(worker: Any, channel: Any, alice: Any) -> None:
    upload = create_upload(user=alice, data_or_file=big_pdf(), name="doomed.pdf", channel=channel)
    processing(upload)
    delete_upload(user=alice, upload=upload)

    # The worker drops the run and goes on with the next upload.
    after = ended(create_upload(user=alice, data_or_file=b"next\n", name="next.txt", channel=channel))
    assert after.status == "ready"
    assert not Upload.objects.filter(pk=upload.pk).exists()
    assert "Traceback" not in output(worker)


def test_worker_child_killed_mid_extraction_runs_it_again(worker: Any, channel: Any, alice: Any) -> None:
    upload = create_upload(user=alice, data_or_file=big_pdf(), name="killed.pdf", channel=channel)
    processing(upload)
    killed = kill_child(worker)

    upload = ended(upload, timeout=60)
    assert (upload.status, upload.attempts) == ("ready", 2), upload.error
    assert files.page_line(BIG_PAGES) in upload.text
    assert killed not in [child.pid for child in psutil.Process(worker.pid).children()]
    starts = [e for e in events_of(channel, upload) if e["status"] == "processing" and e["progress"] == 0]
    assert len(starts) == 2


def test_worker_child_killed_twice_ends_failed(worker: Any, channel: Any, alice: Any) -> None:
    upload = create_upload(user=alice, data_or_file=big_pdf(), name="cursed.pdf", channel=channel)
    processing(upload, attempts=1)
    kill_child(worker)
    processing(upload, attempts=2)
    kill_child(worker)

    upload = ended(upload, timeout=60)
    assert (upload.status, upload.error, upload.attempts) == ("failed", "processing stopped twice", 2)
    assert events_of(channel, upload)[-1]["error"] == "processing stopped twice"
    # The worker is still serving.
    assert ended(create_upload(user=alice, data_or_file=b"alive\n", name="alive.txt")).status == "ready"


def test_make_run_starts_workers_beside_the_server_and_stops_them(tmp_path: Any) -> None:
    import sys

    from tests.processes import clean_env, free_port, group_alive, running

    port = free_port()
    # Its own embedded Redis (no REDIS_URL) and var dir: nothing shared with this run's worker.
    env = clean_env(COLLOQUY_VAR_DIR=str(tmp_path), WORKERS="2")
    command = [sys.executable, "manage.py", "serve", "--port", str(port)]
    with running(command, env, f"http://127.0.0.1:{port}/") as server:
        wait_for(lambda: " ready." in output(server), 60)
        celery = [
            child
            for child in psutil.Process(server.pid).children(recursive=True)
            if "celery" in " ".join(child.cmdline())
        ]
        main = [child for child in celery if child.ppid() == server.pid]
        assert len(main) == 1 and "--concurrency=2" in main[0].cmdline()
        assert len(main[0].children()) == 2  # its prefork children
    # running() sent Ctrl-C (SIGINT) and waited; killed (-9) means it did not stop by itself.
    assert server.returncode != -signal.SIGKILL, "`make run` did not stop after Ctrl-C"
    # Its worker's processes, once the system has reaped them.
    wait_for(lambda: not group_alive(server.pid), 10)
