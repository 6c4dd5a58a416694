"""Typed errors of the domain. Handlers map them to responses in one place."""

from __future__ import annotations


class WxReachError(Exception):
    """Base of every domain error: carries a machine-readable reason and an HTTP status."""

    status: int = 500
    reason: str = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status


class CallbackRejected(WxReachError):
    """A WeChat callback that must not be processed (bad signature, wrong appid, undecryptable...)."""

    status = 403
    reason = "callback_rejected"


class MalformedCallback(CallbackRejected):
    """The callback body is not acceptable XML (garbage, oversize, DTD/entities)."""

    status = 400
    reason = "malformed_xml"


class NotFound(WxReachError):
    status = 404
    reason = "not_found"


class Conflict(WxReachError):
    status = 409
    reason = "conflict"


class InvalidInput(WxReachError):
    status = 400
    reason = "invalid_input"
