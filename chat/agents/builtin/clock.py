"""current_time: the date, time and weekday now, in an IANA time zone (UTC unless asked)."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

from chat.agents.tools import ToolContext, ToolError, ToolOutput, ToolSpec

# What an IANA name can look like ("UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5"):
# anything else (a path, a long string) is refused before zoneinfo looks for a file.
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,3}")


def now_in(name: str) -> str:
    if len(name) > 64 or not ZONE_NAME.fullmatch(name):
        raise ToolError(f"timezone: {name!r} is not an IANA time zone name (e.g. Europe/Paris)")
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ToolError(f"timezone: unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)") from exc
    now = dt.datetime.now(zone)
    return f"{now.isoformat(timespec='seconds')} ({now:%A}, {name}, {now.tzname()})"


class CurrentTime:
    spec = ToolSpec(
        name="current_time",
        description="The current date, time and weekday, in a given IANA time zone (UTC by default).",
        parameters={
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": 'An IANA time zone name, e.g. "Europe/Paris"; default "UTC".',
                }
            },
            "additionalProperties": False,
        },
    )
    status = "checking the time…"
    timeout = 5.0

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        name = arguments.get("timezone")
        if name is None or name == "":
            name = "UTC"
        if not isinstance(name, str):
            raise ToolError("timezone: a string is required")
        return ToolOutput(ok=True, content=now_in(name.strip()))
