"""The WeChat API surface the sandbox models, one module per product area."""

from __future__ import annotations

from local.sandbox.endpoints import mass, subscribe, template, tokens, users
from local.sandbox.endpoints.common import Endpoint

ENDPOINTS: list[Endpoint] = [
    *tokens.ENDPOINTS,
    *template.ENDPOINTS,
    *subscribe.ENDPOINTS,
    *mass.ENDPOINTS,
    *users.ENDPOINTS,
]
