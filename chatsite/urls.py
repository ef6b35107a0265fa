from django.contrib import admin
from django.urls import include, path

from chat.views import LoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),  # throttled; before Django's
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("chat.api.urls")),
    path("", include("chat.urls")),
]
