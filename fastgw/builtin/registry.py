"""Every module that serves built-in endpoints, in registration order."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import BuiltinEndpoints, api_tokens, audit, dashboard, login, me, openapi, requests, usage

if TYPE_CHECKING:
    from ..gateway import Gateway

Register = Callable[[BuiltinEndpoints, "Gateway"], None]

BUILTIN_MODULES: tuple[Register, ...] = (
    me.register,
    api_tokens.register,
    audit.register,
    login.register,
    usage.register,
    requests.register,
    openapi.register,
    dashboard.register,
)
