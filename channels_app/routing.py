from django.urls import re_path

from channels_app.consumers import ChannelConsumer

websocket_urlpatterns = [
    # The name is checked by the consumer, so a bad one gets close code 4004, not a 404.
    re_path(r"^ws/(?P<name>[^/]{1,200})/?$", ChannelConsumer.as_asgi()),
]
