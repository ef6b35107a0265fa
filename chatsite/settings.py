"""Colloquy settings. Everything comes from the environment (docs/configuration.md lists them all)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from csp.constants import NONE, SELF

# Lets Django's generic classes be subscripted at run time (ModelAdmin[Channel]), as
# their type stubs describe them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("COLLOQUY_VAR_DIR", BASE_DIR / "var"))
# The SQLite database, the generated secret key and the embedded Redis's socket live
# here: only the account that runs Colloquy may enter it.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)


def _create_private(path: Path, text: str = "") -> None:
    """Create ``path`` with ``text``, readable by its owner only from the first moment,
    unless it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once per checkout under var/."""
    key = env.str("SECRET_KEY", default="")
    if key:
        return str(key)
    key_file = VAR_DIR / "secret_key"
    _create_private(key_file, secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
ALLOW_SIGNUP = env.bool("ALLOW_SIGNUP", default=False)

INSTALLED_APPS = [
    "daphne",
    "chat.admin_site.ColloquyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "chat",
    "channels_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: the whole chain runs in the request's thread (chatsite/middleware.py says why).
    "chatsite.middleware.SyncMiddlewareChain",
]

# No inline script anywhere, no outside host for anything: model and user text cannot
# run code or make the browser fetch from elsewhere (images included) even if a
# sanitizer were to miss something. 'self' covers ws:/wss: to this host (CSP 3).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.site",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _db_file = Path(DATABASES["default"]["NAME"])
    if str(_db_file) != ":memory:" and _db_file.parent.is_dir():
        # SQLite would create it 0644; an empty file is an empty database, and SQLite
        # gives its -wal and -shm files the database file's mode.
        _create_private(_db_file)
    # Several threads and processes write at once (generation, sockets, API): WAL lets
    # readers go on during a write, IMMEDIATE takes the write lock up front instead of
    # failing mid-transaction with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    # Opening a connection costs ~0.8 ms here (the PRAGMAs included), paid by every
    # socket action and reply: worker threads keep theirs (Django closes one that failed).
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A new PostgreSQL connection costs ~4 ms, paid by every request, socket action and
    # reply; the pool (psycopg-pool) hands out open ones. Django's docs advise a pool,
    # not persistent connections, under ASGI, where threads come and go per request.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN", default=2),
        "max_size": env.int("DB_POOL_MAX", default=20),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, counters, locks, replay buffers ----------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if not REDIS_URL:
    from chatsite.embedded_redis import ensure_running

    REDIS_URL = ensure_running(VAR_DIR)
    os.environ["REDIS_URL"] = REDIS_URL  # child processes share the same server
# Every key and channel-layer group Colloquy makes starts with this, so several
# instances (or test runs) can share one Redis.
REDIS_PREFIX = env.str("REDIS_PREFIX", default="colloquy")
# "pubsub" (default): one Redis subscription per group per process, no storage;
# "core": Redis lists with capacity and expiry. bench/README.md has the
# measurements behind the default.
CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="pubsub")
_LAYER_CONFIG: dict[str, Any] = {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:layer"}
if CHANNEL_LAYER == "core":
    # One inbox per process receives every event of every channel it serves; the
    # default capacity of 100 messages drops tokens as soon as 50 channels stream at once.
    _LAYER_CONFIG["capacity"] = 10_000
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer"
        if CHANNEL_LAYER == "core"
        else "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": _LAYER_CONFIG,
    }
}

# --- Auth -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Every password check is throttled (chat/login_throttle.py). ModelBackend stays listed
# only so that logins made before the throttle existed stay valid (a session names its
# backend); the throttled backend answers every password check itself.
AUTHENTICATION_BACKENDS = [
    "chat.login_throttle.ThrottledModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failed logins allowed per username and per client address (0 = unlimited); a counter
# is forgotten LOGIN_FAILURE_WINDOW seconds after its last failure.
LOGIN_FAILURES_PER_USER = env.int("LOGIN_FAILURES_PER_USER", default=10)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=30)
LOGIN_FAILURE_WINDOW = env.int("LOGIN_FAILURE_WINDOW", default=15 * 60)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# --- HTTPS and cookies (production: set HTTPS=1 behind a TLS-terminating proxy) --------
HTTPS = env.bool("HTTPS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- i18n, static ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"  # collectstatic target in production
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True  # serve from static/ without collectstatic as well

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "chat.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Logged in, unless a view says otherwise (the few public reads do).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "chat.api.scopes.TokenScopes",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "chat.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "EXCEPTION_HANDLER": "chat.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "chat.api.schema_scopes.ScopedAutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Colloquy API",
    "DESCRIPTION": "Channels, sessions, turns, streaming. The wire contract is docs/protocol.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Enums whose field names (`kind`, `status`) other objects use for other values.
    "ENUM_NAME_OVERRIDES": {
        "UploadKindEnum": "chat.api.outputs.UPLOAD_KINDS",
        "UploadStatusEnum": "chat.api.outputs.UPLOAD_STATUSES",
        "AttachmentStatusEnum": "chat.api.outputs.ATTACHMENT_STATUSES",
        "SessionStatusEnum": "chat.api.outputs.SESSION_STATUSES",
        "KnowledgeDocumentStatusEnum": "chat.api.outputs.KNOWLEDGE_DOCUMENT_STATUSES",
        "MemoryOriginEnum": "chat.api.outputs.MEMORY_ORIGINS",
    },
}

# --- Limits and generation ------------------------------------------------------------
MAX_MESSAGE_CHARS = env.int("MAX_MESSAGE_CHARS", default=8000)
MAX_FRAME_BYTES = env.int("MAX_FRAME_BYTES", default=64 * 1024)
MESSAGES_PER_MINUTE = env.int("MESSAGES_PER_MINUTE", default=20)
DAILY_MESSAGES = env.int("DAILY_MESSAGES", default=0)
DAILY_TOKENS = env.int("DAILY_TOKENS", default=0)
MAX_TOKENS_LIMIT = env.int("MAX_TOKENS_LIMIT", default=4096)
# Credits (issue 18; docs/credits.md): off unless CREDITS_ENABLED. New users get
# CREDITS_INITIAL credits; a model without a price in the admin costs CREDITS_DEFAULT_PRICE
# credits per 1,000 tokens, prompt and completion alike (never free by omission).
CREDITS_ENABLED = env.bool("CREDITS_ENABLED", default=False)
CREDITS_INITIAL = env.str("CREDITS_INITIAL", default="100")
CREDITS_DEFAULT_PRICE = env.str("CREDITS_DEFAULT_PRICE", default="1")
# Frames a socket may have waiting to be sent; a client that falls further behind is
# given a fresh history instead of holding up anyone (bench/README.md).
SEND_QUEUE_FRAMES = env.int("SEND_QUEUE_FRAMES", default=2000)
# How often open sockets and SSE streams check that their login still holds.
LOGIN_RECHECK_SECONDS = env.float("LOGIN_RECHECK_SECONDS", default=30.0)
REPLAY_BUFFER_EVENTS = env.int("REPLAY_BUFFER_EVENTS", default=5000)
# Tokens closer together than this are merged into one event (at most 100 events a
# second per reply); a slower stream, and every first token, goes out at once. 25 ms
# added ~14 ms p50 to every token at 50 tokens/s (bench/README.md).
TOKEN_COALESCE_MS = env.int("TOKEN_COALESCE_MS", default=10)
PROVIDER_TIMEOUT = env.float("PROVIDER_TIMEOUT", default=60.0)
DEMO_TOKEN_DELAY = env.float("DEMO_TOKEN_DELAY", default=0.04)
SYNC_REPLY_TIMEOUT = env.float("SYNC_REPLY_TIMEOUT", default=120.0)
# Sessions are deleted this many days after their last activity (deleted ones, after
# their deletion); 0 keeps them for ever. `make run` checks every RETENTION_INTERVAL_SECONDS.
RETENTION_DAYS = env.int("RETENTION_DAYS", default=0)
RETENTION_INTERVAL_SECONDS = env.float("RETENTION_INTERVAL_SECONDS", default=3600.0)
# After a session's reply, the task model names a session that has no title.
SESSION_TITLES = env.bool("SESSION_TITLES", default=True)

# --- Files: uploads, extraction, transcription (docs/configuration.md "Files") ---------
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=25 * 1024 * 1024)
DAILY_UPLOAD_BYTES = env.int("DAILY_UPLOAD_BYTES", default=500 * 1024 * 1024)  # 0: no limit
MAX_ATTACHMENTS_PER_MESSAGE = env.int("MAX_ATTACHMENTS_PER_MESSAGE", default=10)
# Extraction caps: a document's pages and characters, a recording's seconds, and the
# time one file may take a worker before it ends failed.
EXTRACT_MAX_PAGES = env.int("EXTRACT_MAX_PAGES", default=500)
EXTRACT_MAX_CHARS = env.int("EXTRACT_MAX_CHARS", default=1_000_000)
EXTRACT_MAX_AUDIO_SECONDS = env.int("EXTRACT_MAX_AUDIO_SECONDS", default=1800)
EXTRACT_TIME_LIMIT = env.int("EXTRACT_TIME_LIMIT", default=300)
# POST /api/transcribe works in the request's thread: a shorter cap than uploads' (at a
# real-time factor of ~0.4, five minutes of speech hold a thread for two).
TRANSCRIBE_MAX_SECONDS = env.int("TRANSCRIBE_MAX_SECONDS", default=300)
# Of an attachment's text, this many characters go into the prompt; more is cut, with a note.
ATTACHMENT_PROMPT_CHARS = env.int("ATTACHMENT_PROMPT_CHARS", default=24_000)
# Images are re-encoded to at most this side (pixels) and size (bytes) before a model sees them.
IMAGE_MAX_SIDE = env.int("IMAGE_MAX_SIDE", default=2048)
IMAGE_MAX_BYTES = env.int("IMAGE_MAX_BYTES", default=4 * 1024 * 1024)
IMAGE_MAX_PIXELS = env.int("IMAGE_MAX_PIXELS", default=50_000_000)  # larger: a decompression bomb
# Where files live: "local" (private files under var/uploads, never served as static
# files) or "s3" (an S3-compatible bucket, through django-storages).
UPLOADS_STORAGE = env.str("UPLOADS_STORAGE", default="local")
UPLOADS_DIR = Path(env.str("UPLOADS_DIR", default=str(VAR_DIR / "uploads")))
if UPLOADS_STORAGE == "s3":
    _UPLOADS: dict[str, Any] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            # Keys are read from the environment by boto3 (AWS_ACCESS_KEY_ID,
            # AWS_SECRET_ACCESS_KEY), never stored here or in the database.
            "default_acl": None,
            # Files are served through the API (access checked per request), never by a
            # bucket URL; should anything ask the storage for one, it is signed for an hour.
            "querystring_auth": True,
            "querystring_expire": 3600,
            "file_overwrite": False,
        },
    }
else:
    _UPLOADS = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(UPLOADS_DIR), "base_url": None, "file_permissions_mode": 0o600},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "uploads": _UPLOADS,
}


# --- Knowledge (docs/configuration.md "Knowledge") --------------------------------------
# The embedding model of new knowledge bases: "local" (wordllama, offline, in-process)
# or "<provider name>:<model>" (an OpenAI-compatible /v1/embeddings of a Provider row).
# Changing it leaves existing bases as they are; `manage.py reembed_knowledge --all`
# moves them.
EMBEDDINGS = env.str("EMBEDDINGS", default="local")
# Passages a search returns, and the score (0..1) under which a passage is left out.
KB_TOP_K = env.int("KB_TOP_K", default=10)
KB_SCORE_THRESHOLD = env.float("KB_SCORE_THRESHOLD", default=0.1)
# Documents one base may hold, and the characters of one pasted text.
KB_MAX_DOCUMENTS_PER_BASE = env.int("KB_MAX_DOCUMENTS_PER_BASE", default=500)
KB_MAX_TEXT_CHARS = env.int("KB_MAX_TEXT_CHARS", default=2_000_000)
# Chunks embedded (and written, and made searchable) together while indexing.
KB_EMBED_BATCH = env.int("KB_EMBED_BATCH", default=64)
# PostgreSQL: bases searched together holding at most this many chunks are searched by
# meaning exactly (sorted by distance) instead of through the HNSW index (chat/knowledge/search.py).
KB_EXACT_SCAN_CHUNKS = env.int("KB_EXACT_SCAN_CHUNKS", default=200_000)

# Agents (issue 17): the tool loop, built-in tools, memory and compaction
# (docs/configuration.md).
MAX_TOOL_ROUNDS = env.int("MAX_TOOL_ROUNDS", default=8)
MAX_TOOL_CALLS_PER_ROUND = env.int("MAX_TOOL_CALLS_PER_ROUND", default=16)  # the rest are dropped
TOOL_TIMEOUT = env.float("TOOL_TIMEOUT", default=30.0)  # seconds, per call unless the tool says less
TOOL_OUTPUT_CHARS = env.int(
    "TOOL_OUTPUT_CHARS", default=16_000
)  # what the model and the room get of a result
TOOL_APPROVAL_TIMEOUT = env.float("TOOL_APPROVAL_TIMEOUT", default=600.0)  # then the call is denied
WEB_FETCH_MAX_BYTES = env.int("WEB_FETCH_MAX_BYTES", default=2_000_000)
WEB_FETCH_TIMEOUT = env.float("WEB_FETCH_TIMEOUT", default=15.0)
WEB_FETCH_ALLOWED_HOSTS = env.list("WEB_FETCH_ALLOWED_HOSTS", default=[])  # empty: any public host
# "ip:port" pairs ("127.0.0.1:8000", "[::1]:8000") web_fetch may reach although they are
# private: for tests and local development only, never in production. Exactly those
# pairs; every other private, loopback or metadata address stays refused (chat/agents/ssrf.py).
WEB_FETCH_PRIVATE_EXEMPT = env.list("WEB_FETCH_PRIVATE_EXEMPT", default=[])
WEB_SEARCH_URL = env.str("WEB_SEARCH_URL", default="")  # a SearXNG-style JSON search endpoint
COMPACT_AT = env.float("COMPACT_AT", default=0.7)  # share of the context window; 0: off
MEMORY_MAX_PER_USER = env.int("MEMORY_MAX_PER_USER", default=200)  # memories one user keeps
MEMORY_PROMPT_CHARS = env.int("MEMORY_PROMPT_CHARS", default=2000)  # of them in a prompt (newest kept)
# Facts extracted by the task model after a session ends (chat/agents/memory_extraction.py).
MEMORY_EXTRACTION = env.bool("MEMORY_EXTRACTION", default=True)


# The task queue (Celery) on the same Redis: extraction and transcription of uploads
# run in worker processes (`make run` starts one; production runs `celery -A chatsite
# worker`). Its keys share REDIS_PREFIX, so instances and test runs never mix.
def _broker_url(url: str) -> str:
    # kombu names a Unix socket "redis+socket://" (the embedded Redis listens on one).
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CELERY_BROKER_URL = _broker_url(REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
    # A task whose worker died unacknowledged goes back to the queue after this long.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * EXTRACT_TIME_LIMIT + 60),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = f"{REDIS_PREFIX}-files"
CELERY_TASK_ACKS_LATE = True  # a task is done when it finished, not when it was taken
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed child's task is run again
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # results are written to the Upload row
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"

LLM_BASE_URL = env.str("LLM_BASE_URL", default="")
LLM_API_KEY_ENV = "LLM_API_KEY"
LLM_MODEL = env.str("LLM_MODEL", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Close turns left "generating" by a dead process when a server process starts.
RECOVER_ON_START = env.bool("RECOVER_ON_START", default=True)
# How often each server process looks for replies whose process died (0 = never): they
# are closed as errors at most this long after their lock expires (15 s).
RECOVERY_INTERVAL_SECONDS = env.float("RECOVERY_INTERVAL_SECONDS", default=3.0)
