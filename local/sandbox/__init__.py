"""WeChat sandbox: an HTTP server that behaves like the WeChat Official Account API.

Used by integration/e2e tests and the local demo so that nothing ever calls the real WeChat.
See docs/sandbox.md. Section numbers (§n) in comments point into docs/reference/wechat-api.md.
"""

from __future__ import annotations

from local.sandbox.app import Sandbox
from local.sandbox.clock import Clock, ManualClock, SystemClock
from local.sandbox.config import SandboxConfig
from local.sandbox.server import SandboxServer

__all__ = ["Clock", "ManualClock", "Sandbox", "SandboxConfig", "SandboxServer", "SystemClock"]
