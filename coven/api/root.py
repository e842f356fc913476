"""Assembles the resource tree for one daemon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coven.api.discovery import Discovery
from coven.api.events import Events
from coven.api.http import CovenSite
from coven.api.resource import JsonResource, Router
from coven.api.sessions import Sessions
from coven.config import Config


@dataclass(frozen=True)
class ApiContext:
    """The components a route may consult."""

    config: Config
    store: Any
    supervisor: Any
    started_at: str
    reactor: Any


def build_site(context: ApiContext, reactor: Any = None) -> CovenSite:
    router = Router()
    Discovery(context).register(router)
    sessions = Sessions(context)
    Events(context, sessions).register(router)  # its /sessions/:id/... routes precede the lookup
    sessions.register(router)
    return CovenSite(JsonResource(router), reactor=reactor)
