"""Docker-free local stack: the SAM template run on moto, with the functions in worker processes.

    from local.stack import LocalStack, Settings
    with LocalStack(Settings(port=0, moto_port=0)) as stack:
        stack.api_url, stack.moto_url, stack.resources, stack.api_key
        stack.wait_idle(10)

Names are imported lazily: worker processes import this package and must stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.stack.cfn import TemplateError
    from local.stack.functions import InvocationResult
    from local.stack.settings import Settings
    from local.stack.specs import FunctionSpec, Resource, RouteSpec
    from local.stack.stack import LocalStack, StackError

__all__ = [
    "FunctionSpec",
    "InvocationResult",
    "LocalStack",
    "Resource",
    "RouteSpec",
    "Settings",
    "StackError",
    "TemplateError",
]

_HOMES = {
    "LocalStack": "local.stack.stack",
    "StackError": "local.stack.stack",
    "Settings": "local.stack.settings",
    "TemplateError": "local.stack.cfn",
    "InvocationResult": "local.stack.functions",
    "FunctionSpec": "local.stack.specs",
    "Resource": "local.stack.specs",
    "RouteSpec": "local.stack.specs",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'local.stack' has no attribute {name!r}")
