"""Settings come from the environment, with defaults that work on a bare machine."""

import json
import secrets
import sys

from tests.processes import ROOT, clean_env, manage

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    "'redis': s.REDIS_URL, 'layer': s.CHANNEL_LAYERS['default']['BACKEND'], 'debug': s.DEBUG,"
    "'signup': s.ALLOW_SIGNUP, 'max_chars': s.MAX_MESSAGE_CHARS}))"
)


def run_python(code, env):
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_defaults_need_nothing_but_python(tmp_path):
    env = clean_env(COLLOQUY_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="chatsite.settings")
    result = run_python(PRINT_SETTINGS, env)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["db"] == "django.db.backends.sqlite3"
    assert found["name"] == str(tmp_path / "db.sqlite3")
    assert found["redis"] == f"unix://{tmp_path / 'redis.sock'}"
    assert found["layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert found["debug"] is False
    assert found["signup"] is False


def test_the_embedded_redis_is_a_real_redis_and_stops_with_its_process(tmp_path):
    env = clean_env(COLLOQUY_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="chatsite.settings")
    code = (
        "import django; django.setup(); from django.conf import settings; import redis; "
        "r = redis.Redis.from_url(settings.REDIS_URL); print(r.ping(), r.info()['redis_version'])"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "True"
    from chatsite.embedded_redis import _answers

    assert not _answers(tmp_path / "redis.sock"), "the embedded Redis outlived the process that started it"


def test_environment_variables_override_the_defaults(tmp_path):
    env = clean_env(
        COLLOQUY_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6399/0",
        DEBUG="1",
        ALLOW_SIGNUP="1",
        MAX_MESSAGE_CHARS="123",
    )
    found = json.loads(run_python(PRINT_SETTINGS, env).stdout.strip().splitlines()[-1])
    assert found["db"] == "django.db.backends.postgresql"
    assert found["redis"] == "redis://127.0.0.1:6399/0"
    assert found["debug"] is True and found["signup"] is True and found["max_chars"] == 123


def test_production_settings_pass_the_deploy_check(tmp_path):
    env = clean_env(
        COLLOQUY_VAR_DIR=str(tmp_path),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="chat.example.org",
        CSRF_TRUSTED_ORIGINS="https://chat.example.org",
        HTTPS="1",
        REDIS_URL="redis://127.0.0.1:6399/0",
    )
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_development_defaults_fail_the_deploy_check(tmp_path):
    """A check that can fail: without HTTPS the deploy check must complain."""
    env = clean_env(COLLOQUY_VAR_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:6399/0")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0


def test_the_core_layer_gets_room_for_every_channel_a_process_serves(tmp_path):
    env = clean_env(
        COLLOQUY_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        REDIS_URL="redis://127.0.0.1:6399/0",
        CHANNEL_LAYER="core",
    )
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps(s.CHANNEL_LAYERS['default']))"
    )
    layer = json.loads(run_python(code, env).stdout.strip().splitlines()[-1])
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    # One hub inbox per process carries every channel's events: 100 (the default) drops.
    assert layer["CONFIG"]["capacity"] >= 10_000
