"""ASGI entry point: `daphne chatsite.asgi:application` (or uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Set up Django before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from channels_app import daphne_close  # noqa: E402
from channels_app.auth import RawSendMiddleware, SessionOrTokenAuthMiddleware  # noqa: E402
from channels_app.origin import CsrfOriginValidator  # noqa: E402
from channels_app.routing import websocket_urlpatterns  # noqa: E402
from chat.generation import engine  # noqa: E402
from chat.realtime import background  # noqa: E402
from chat.uploads.body_limit import BodyLimit  # noqa: E402
from chatsite import log_redaction  # noqa: E402

daphne_close.install()
log_redaction.install()

application = ProtocolTypeRouter(
    {
        # Bodies that carry files are refused by their length before Django reads them.
        "http": BodyLimit(django_asgi_app),
        "websocket": CsrfOriginValidator(
            RawSendMiddleware(SessionOrTokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)

if settings.RECOVER_ON_START:
    background.submit(engine.arecover_unfinished())
if settings.RECOVERY_INTERVAL_SECONDS:
    background.submit(engine.watch_for_dead_replies(settings.RECOVERY_INTERVAL_SECONDS))
