from django.urls import path

from chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("channel/<str:name>", views.channel_page, name="channel"),
    path("watch/<str:name>", views.watch_page, name="watch"),
    path("knowledge/", views.knowledge, name="knowledge"),
    path("knowledge/<uuid:base_id>/", views.knowledge_base, name="knowledge_base"),
    path("account/", views.account, name="account"),
    path("accounts/signup/", views.signup, name="signup"),
]
