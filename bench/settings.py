"""The site's settings plus the benchmark's bare reference views (bench/urls.py).

The REST scenario serves with ``DJANGO_SETTINGS_MODULE=bench.settings``, so the same
process answers the API and the bare views: their difference is the API's own cost
(DRF, authentication, permission checks, the Redis flags), not the server's.
"""

from chatsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
