"""Uploads in an S3-compatible bucket (UPLOADS_STORAGE=s3, django-storages), against a
real S3 server (moto's server mode) and a real server process and worker: the bytes go
to the bucket and nowhere on disk, are read back through the API and by the worker, and
deleting the upload removes the object."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from chat.models import ApiToken, Upload
from tests import files
from tests.conftest import wait_for
from tests.processes import celery_worker, free_port, live_env, live_servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "colloquy-test", "AWS_SECRET_ACCESS_KEY": "colloquy-test-secret"}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"colloquy-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    yield {"client": client, "bucket": bucket, "endpoint": endpoint}
    server.stop()


def keys(s3: dict[str, Any]) -> list[str]:
    listed = s3["client"].list_objects_v2(Bucket=s3["bucket"])
    return [item["Key"] for item in listed.get("Contents", [])]


def test_uploads_live_in_the_bucket_and_nowhere_on_disk(s3, alice, tmp_path):
    local = tmp_path / "uploads"
    env = {
        "UPLOADS_STORAGE": "s3",
        "S3_BUCKET": s3["bucket"],
        "S3_ENDPOINT_URL": s3["endpoint"],
        "S3_REGION": "us-east-1",
        "UPLOADS_DIR": str(local),
        **CREDENTIALS,
    }
    auth = {"Authorization": f"Bearer {ApiToken.issue(alice)}"}
    pdf = files.pdf(2)
    with live_servers("uvicorn", 1, **env) as hosts, celery_worker(live_env(**env)):
        base = f"http://{hosts[0]}"
        response = httpx.post(f"{base}/api/uploads", files={"file": ("report.pdf", pdf)}, headers=auth)
        assert response.status_code == 201, response.text
        made = response.json()
        assert keys(s3) == [f"uploads/{alice.pk}/{made['id']}"]
        stored = s3["client"].get_object(Bucket=s3["bucket"], Key=keys(s3)[0])["Body"].read()
        assert stored == pdf

        # The worker reads it from the bucket too
        ready = wait_for(lambda: Upload.objects.filter(pk=made["id"], status="ready").first(), timeout=60)
        assert files.page_line(1) in ready.text

        content = httpx.get(f"{base}{made['url']}", headers=auth)
        assert content.status_code == 200 and content.content == pdf
        assert content.headers["content-type"] == "application/pdf"
        assert content.headers["content-disposition"].startswith("attachment")
        assert httpx.get(f"{base}{made['url']}").status_code == 404  # not sent: the owner's only

        assert httpx.delete(f"{base}/api/uploads/{made['id']}", headers=auth).status_code == 204
        assert keys(s3) == []
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
