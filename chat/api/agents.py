"""The agents and tools endpoints (docs/protocol.md, "Agents and tools"): what a person
may name in a message (`agent`) and switch on in a channel (`tools`). Signed-in callers
only (a session or a token)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.agents import selectors as agent_selectors
from chat.api import outputs
from chat.api.outputs import errors
from chat.api.views import require_login


class AgentsView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(operation_id="agents_list", responses={200: outputs.AgentList, **errors()})
    def get(self, request: Request) -> Response:
        """The enabled agents, by name."""
        caller = require_login(request)
        agents = agent_selectors.enabled_agents()
        return Response({"agents": agent_selectors.agents_to_dicts(agents, caller)})


class AgentDetailView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(responses={200: outputs.Agent, **errors(404)})
    def get(self, request: Request, name: str) -> Response:
        """One enabled agent (a disabled or unknown one is 404)."""
        caller = require_login(request)
        agent = agent_selectors.agent_for(name)
        if agent is None:
            raise Http404("No such agent.")
        return Response(agent_selectors.agents_to_dicts([agent], caller)[0])


class ToolsView(APIView):
    required_scopes = {"GET": "chats:read"}

    @extend_schema(operation_id="tools_list", responses={200: outputs.ToolList, **errors()})
    def get(self, request: Request) -> Response:
        """The tools a channel or agent may switch on: the built-ins, then the enabled MCP
        servers' (`available` false: not offered now — a module not installed, no search
        endpoint configured, a server that does not answer)."""
        require_login(request)
        return Response({"tools": agent_selectors.tool_catalogue()})
