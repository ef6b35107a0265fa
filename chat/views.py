"""The pages. Thin: read through selectors, write through services. Live state reaches
the channel and watch pages over the WebSocket (static/js/colloquy.js); the pages only
render the frame around it."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from chat import permissions, selectors, services
from chat.agents.registry import builtin_names
from chat.errors import ServiceError
from chat.forms import ChannelForm, InstructionForm, LoginForm, PreferencesForm, SignupForm, TokenForm
from chat.models import ApiToken, Channel, Instruction
from chat.services import tokens as token_services

FRAMING_FIELDS = [
    ("name", "name"),
    ("preamble", "preamble"),
    ("user_prefix", "user prefix"),
    ("bot_prefix", "bot prefix"),
    ("agent_prefix", "agent prefix"),
    ("turn_suffix", "turn suffix"),
    ("stop", "stop sequences (one a line)"),
    ("quote_user", "quote user text"),
]


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    form = ChannelForm(request.POST or None)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect(f"{settings.LOGIN_URL}?next=/")
        if form.is_valid():
            try:
                channel = services.create_channel(owner=request.user, **form.cleaned_data)
            except ServiceError as error:
                form.add_service_error(error)
            else:
                return redirect("channel", name=channel.name)
    channels = list(selectors.visible_channels(request.user))
    rows = zip(channels, selectors.generating_flags(channels), strict=True)
    status = 400 if form.errors else 200
    return render(request, "chat/index.html", {"rows": rows, "form": form}, status=status)


def missing_channel(request: HttpRequest, name: str) -> HttpResponse:
    """A 404 that offers to open the channel (outsiders see private ones as missing)."""
    form = ChannelForm(initial={"name": name, "title": name})
    return render(request, "chat/missing.html", {"name": name, "form": form}, status=404)


def channel_page(request: HttpRequest, name: str) -> HttpResponse:
    channel = selectors.channel_for(request.user, name)
    if channel is None:
        return missing_channel(request, name)
    if not request.user.is_authenticated:
        # Anyone may follow a public channel; talking in it needs an account.
        return redirect(f"{settings.LOGIN_URL}?next=/channel/{name}")
    context = page_context(request, channel, mode="chat")
    context["can_configure"] = permissions.can_configure(request.user, channel)
    context["providers"] = selectors.enabled_providers()
    context["framing_fields"] = FRAMING_FIELDS
    context["param_fields"] = ["model", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty"]
    # A channel takes a shared instruction or its owner's own (services.update_channel).
    context["channel_instructions"] = selectors.instructions_for(channel.owner)
    context["policy_ranges"] = ["temperature", "top_p", "top_k", "repeat_penalty", "max_tokens"]
    # The owner's (or a moderator's) message may ask for web search where the instance
    # has a search endpoint (members get the channel's tools: policy.check_web_search).
    context["web_search_offered"] = "web_search" in builtin_names()
    return render(request, "chat/channel.html", context)


def watch_page(request: HttpRequest, name: str) -> HttpResponse:
    channel = selectors.channel_by_name(name)
    key = request.GET.get("key")
    if channel is not None and permissions.can_watch(request.user, channel, key):
        return render(request, "chat/watch.html", page_context(request, channel, mode="watch", key=key))
    if key:
        # The same answer whether or not the channel exists: a guessed name with any
        # key must not reveal a private channel.
        return render(request, "chat/bad_key.html", {"name": name}, status=403)
    return missing_channel(request, name)


def page_context(
    request: HttpRequest, channel: Channel, *, mode: str, key: str | None = None
) -> dict[str, Any]:
    return {
        "channel": channel,
        "mode": mode,
        "watch_key": key or "",
        "watch_url": request.build_absolute_uri(selectors.watch_path(request.user, channel)),
        "max_message_chars": settings.MAX_MESSAGE_CHARS,
    }


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    token = None
    new_token: dict[str, str] | None = None
    token_form = TokenForm(moderator=permissions.is_moderator(user), auto_id="id_token_%s")
    choices: dict[str, Any] = {
        "models": [f"{p.name}/{m}" for p in selectors.enabled_providers() for m in p.served_models],
        "instructions": [(i.pk, i.name) for i in selectors.instructions_for(user)],
    }
    current = selectors.preferences(user)
    initial = {
        "model": f"{current['provider']}/{current['model']}" if current["provider"] else "",
        "instruction": current["instruction"],
    }
    preferences = PreferencesForm(initial=initial, **choices)
    status = 200
    failed: tuple[int | None, InstructionForm] | None = None
    if request.method == "POST" and request.POST.get("form") == "preferences":
        preferences = PreferencesForm(request.POST, **choices)
        if preferences.is_valid():
            try:
                services.set_preferences(user=user, changes=preferences.changes())
                return redirect("account")
            except ServiceError as error:
                preferences.add_service_error(error)
        status = 400
    elif request.method == "POST" and request.POST.get("form", "").startswith("instruction"):
        failed = change_instruction(request, user)
        if failed is None:
            return redirect("account")
        status = 400
    elif request.method == "POST" and request.POST.get("form", "").startswith("token-"):
        token_form, new_token, failed_token = change_token(request, user)
        if failed_token:
            status = 400
        elif new_token is None:
            return redirect("account")
    elif request.method == "POST":
        # The full-scope token (as POST /api/me/token): shown in this answer only; the
        # database keeps its hash.
        token = token_services.rotate_full_token(user=user)
    own = selectors.instructions_for(user).filter(owner=user)
    tokens = list(ApiToken.objects.filter(user=user).order_by("created_at", "pk"))
    retry = dict([failed]) if failed else {}  # the form that failed, shown with its errors
    context = {
        "state": selectors.account_state(user),
        "token": token,
        "has_token": any(t.name == ApiToken.LEGACY_NAME for t in tokens),
        "tokens": tokens,
        "new_token": new_token,
        "token_form": token_form,
        "preferences": preferences,
        "shared_instructions": selectors.instructions_for(user).filter(owner=None),
        "instructions": [(item, retry.get(item.pk, instruction_form(item))) for item in own],
        "new_instruction": retry.get(None, InstructionForm(auto_id="id_new_instruction_%s")),
    }
    response = render(request, "chat/account.html", context, status=status)
    response["Cache-Control"] = "no-store"
    return response


def change_token(request: HttpRequest, user: Any) -> tuple[TokenForm, dict[str, str] | None, bool]:
    """Make or revoke one of the user's named tokens from the account page: (the form
    to show, the new token to show once, whether the form failed)."""
    moderator = permissions.is_moderator(user)
    blank = TokenForm(moderator=moderator, auto_id="id_token_%s")
    if request.POST["form"] == "token-revoke":
        # Already gone (another tab), or not the user's: nothing to do.
        with contextlib.suppress(ServiceError):
            token_services.revoke_token(user=user, token_id=request.POST.get("id", ""))
        return blank, None, False
    form = TokenForm(request.POST, moderator=moderator, auto_id="id_token_%s")
    if not form.is_valid():
        return form, None, True
    try:
        made, raw = token_services.create_token(
            user=user,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.cleaned_data["expires_at"],
        )
    except ServiceError as error:
        form.add_service_error(error)
        return form, None, True
    return blank, {"name": made.name, "token": raw}, False


def instruction_form(instruction: Instruction, data: Any = None) -> InstructionForm:
    """The edit form of one of the user's instructions (ids apart from the others')."""
    initial = {"name": instruction.name, "text": instruction.text}
    return InstructionForm(data, initial=initial, auto_id=f"id_instruction_{instruction.pk}_%s")


def change_instruction(request: HttpRequest, user: Any) -> tuple[int | None, InstructionForm] | None:
    """Create, change or delete one of the user's instructions from the account page's
    forms: None when done, else the instruction's id (None: a new one) and its form
    with the errors."""
    kind = request.POST["form"]
    if kind == "instruction-new":
        form = InstructionForm(request.POST, auto_id="id_new_instruction_%s")
        if form.is_valid():
            try:
                services.create_instruction(user=user, **form.cleaned_data)
                return None
            except ServiceError as error:
                form.add_service_error(error)
        return None, form
    found = own_instruction(user, request.POST.get("id", ""))
    if kind == "instruction-delete":
        services.delete_instruction(user=user, instruction=found)
        return None
    if kind != "instruction-edit":
        raise Http404("No such form.")
    form = instruction_form(found, request.POST)
    if form.is_valid():
        try:
            services.update_instruction(user=user, instruction=found, changes=form.cleaned_data)
            return None
        except ServiceError as error:
            form.add_service_error(error)
    return found.pk, form


def own_instruction(user: Any, raw_id: str) -> Instruction:
    """One of the user's own instructions by the id a form sent, else a 404 (shared ones
    are the admins', in the admin)."""
    # Bounded so that a huge number is a 404, not a database overflow.
    found = None
    if raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18:
        found = selectors.instructions_for(user).filter(owner=user, pk=int(raw_id)).first()
    if found is None:
        raise Http404("No such instruction of yours.")
    return found


@login_required
@require_http_methods(["GET", "HEAD"])
def knowledge(request: HttpRequest) -> HttpResponse:
    """The knowledge bases the user can read, and a form to make one. The lists and every
    change go through the REST API (static/js/knowledge.js); the page only offers the
    rooms a base may belong to: those the user may configure (services.create_base
    checks it again)."""
    user = request.user
    rooms = [room for room in selectors.visible_channels(user) if permissions.can_configure(user, room)]
    response = render(request, "chat/knowledge.html", {"rooms": rooms})
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "HEAD"])
def knowledge_base(request: HttpRequest, base_id: UUID) -> HttpResponse:
    """One knowledge base: its documents, their progress, search, a passage (?chunk=N).
    The frame is the same for any id; what the user may read (a private room's base is
    a 404 to outsiders) is the API's answer, which the script shows. A citation's link
    (?chunk=N&turn=T, with the watch page's &key=) opens for anyone: the API shows the
    passage to whoever may read the reply that cites it."""
    if not request.user.is_authenticated and "chunk" not in request.GET:
        return redirect_to_login(request.get_full_path())
    response = render(request, "chat/knowledge_base.html", {"base_id": base_id})
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "HEAD", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.ALLOW_SIGNUP:
        raise Http404("Sign-up is closed on this site.")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("index")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


class LoginView(auth_views.LoginView):
    """Django's login page; a throttled attempt is answered 429 with the form's error."""

    form_class = LoginForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttled is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.throttled.retry_after)
        return response
