"""`make run`'s command on a bare machine: SQLite, an embedded Redis, daphne."""

import sys

import httpx

from tests.processes import clean_env, free_port, group_alive, output, running


def test_serve_sets_everything_up_and_leaves_nothing_behind(tmp_path):
    port = free_port()
    env = clean_env(COLLOQUY_VAR_DIR=str(tmp_path), DEBUG="1")
    base = f"http://127.0.0.1:{port}"
    with running([sys.executable, "manage.py", "serve", "--port", str(port)], env, base + "/") as server:
        index = httpx.get(base + "/")
        assert index.status_code == 200
        assert "demo" in index.text  # the public demo channel exists
        admin = httpx.get(base + "/admin/", follow_redirects=True)
        assert admin.status_code == 200 and "Log in" in admin.text
        assert (tmp_path / "redis.sock").exists()
    printed = output(server)
    assert "Admin account created: admin / " in printed  # credentials printed once
    assert not group_alive(server.pid), "a process of `make run` survived Ctrl-C"
    assert not (tmp_path / "redis.sock").exists() or not _redis_answers(tmp_path)


def test_serve_takes_the_admin_credentials_from_the_environment(tmp_path):
    port = free_port()
    env = clean_env(
        COLLOQUY_VAR_DIR=str(tmp_path),
        DJANGO_SUPERUSER_USERNAME="boss",
        DJANGO_SUPERUSER_PASSWORD="a-long-secret-pw",
    )
    base = f"http://127.0.0.1:{port}"
    with running([sys.executable, "manage.py", "serve", "--port", str(port)], env, base + "/"):
        client = httpx.Client(base_url=base)
        login_page = client.get("/admin/login/")
        token = login_page.cookies["csrftoken"]
        answer = client.post(
            "/admin/login/?next=/admin/",
            data={"username": "boss", "password": "a-long-secret-pw", "csrfmiddlewaretoken": token},
            headers={"Referer": base + "/admin/login/"},
            follow_redirects=True,
        )
        assert "Colloquy moderation desk" in answer.text and "Log out" in answer.text


def _redis_answers(path):
    from chatsite.embedded_redis import _answers

    return _answers(path / "redis.sock")
