from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from chat.api import docs, transcribe, uploads, views

urlpatterns = [
    path("channels", views.ChannelsView.as_view()),
    path("channels/<str:name>", views.ChannelDetailView.as_view()),
    path("channels/<str:name>/watch-key", views.WatchKeyView.as_view()),
    path("channels/<str:name>/members", views.MembersView.as_view()),
    path("channels/<str:name>/members/<str:username>", views.MemberDetailView.as_view()),
    path("channels/<str:name>/messages", views.MessagesView.as_view()),
    path("channels/<str:name>/events", views.ChannelEventsView.as_view()),
    path("channels/<str:name>/regenerate", views.RegenerateView.as_view()),
    path("channels/<str:name>/inject", views.InjectView.as_view()),
    path("channels/<str:name>/reset", views.ResetView.as_view()),
    path("channels/<str:name>/interrupt", views.InterruptView.as_view()),
    path("channels/<str:name>/sessions", views.ChannelSessionsView.as_view()),
    path("sessions", views.SessionsView.as_view()),
    path("sessions/bulk-delete", views.BulkDeleteView.as_view()),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view()),
    path("sessions/<str:session_id>/turns", views.TurnsView.as_view()),
    path("sessions/<str:session_id>/truncate", views.TruncateView.as_view()),
    path("turns/<str:turn_id>", views.TurnDetailView.as_view()),
    path("prompts", views.PromptsView.as_view()),
    path("providers", views.ProvidersView.as_view()),
    path("me", views.MeView.as_view()),
    path("me/token", views.MeTokenView.as_view()),
    path("instructions", views.InstructionsView.as_view()),
    path("instructions/<str:instruction_id>", views.InstructionDetailView.as_view()),
    path("uploads", uploads.UploadsView.as_view()),
    path("uploads/<str:upload_id>", uploads.UploadDetailView.as_view()),
    path("uploads/<str:upload_id>/content", uploads.UploadContentView.as_view()),
    path("transcribe", transcribe.TranscribeView.as_view()),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", docs.api_docs, name="api-docs"),
]
