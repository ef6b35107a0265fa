"""The caller's memories (docs/protocol.md, "Memories"): list, add, rewrite, forget.
Only one's own: another user's memory, an expired one and a missing one are all 404."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.agents import memory
from chat.api import outputs
from chat.api.outputs import errors
from chat.api.uploads import refuse_unknown_query
from chat.api.views import parse, require_login
from chat.models import Memory
from chat.schemas import MemoryCreateSerializer, MemoryUpdateSerializer


def memory_or_404(request: Request, memory_id: str) -> Memory:
    found = memory.memory_for(request.user, memory_id)
    if found is None:
        raise Http404("No such memory.")
    return found


class MemoriesView(APIView):
    required_scopes = {"GET": "chats:read", "POST": "chats:write"}

    @extend_schema(operation_id="me_memories_list", responses={200: outputs.MemoryList, **errors(400)})
    def get(self, request: Request) -> Response:
        """The facts replies remember about the caller, oldest first (expired ones are gone)."""
        caller = require_login(request)
        refuse_unknown_query(request, set())
        rows = memory.memories_of(caller.pk)
        return Response({"memories": [memory.memory_to_dict(m) for m in rows]})

    @extend_schema(request=MemoryCreateSerializer, responses={201: outputs.Memory, **errors(400, 403)})
    def post(self, request: Request) -> Response:
        """A fact of the caller's own: `text` (1–1000 characters, trimmed), `expires_at`
        (optional, in the future)."""
        caller = require_login(request)
        data = parse(MemoryCreateSerializer, request)
        created = memory.create_memory(user=caller, text=data["text"], expires_at=data.get("expires_at"))
        return Response(memory.memory_to_dict(created), status=status.HTTP_201_CREATED)


class MemoryDetailView(APIView):
    required_scopes = {"PATCH": "chats:write", "DELETE": "chats:write"}

    @extend_schema(request=MemoryUpdateSerializer, responses={200: outputs.Memory, **errors(400, 403, 404)})
    def patch(self, request: Request, memory_id: str) -> Response:
        """Rewrite `text`, or set `expires_at` (null: never)."""
        caller = require_login(request)
        found = memory_or_404(request, memory_id)
        changed = memory.update_memory(
            user=caller, memory=found, changes=parse(MemoryUpdateSerializer, request)
        )
        return Response(memory.memory_to_dict(changed))

    @extend_schema(responses={204: None, **errors(403, 404)})
    def delete(self, request: Request, memory_id: str) -> Response:
        """Forget it."""
        caller = require_login(request)
        memory.delete_memory(user=caller, memory=memory_or_404(request, memory_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
