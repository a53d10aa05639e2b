"""What every request handler depends on: the shared ``Desk`` and the token check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

from config.settings import Settings
from producer.client import Client
from producer.web.auth import Auth, Caller, Role
from producer.web.models import RetrainRunner
from storage.registry import Registry

__all__ = ["Desk", "desk_of", "require"]


@dataclass
class Desk:
    """What every request handler shares."""

    settings: Settings
    client: Client
    auth: Auth
    registry: Registry
    retrain: RetrainRunner


def desk_of(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


def require(role: Role) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency admitting callers with at least ``role``; cookie callers must also pass CSRF."""

    async def dependency(request: Request) -> Caller:
        desk = desk_of(request)
        caller = desk.auth.caller(request)
        if caller is None:
            raise HTTPException(
                401,
                "missing or wrong token: send Authorization: Bearer TOKEN (INKQ_API_TOKENS) or sign in at /signin",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not caller.allowed(role):
            raise HTTPException(403, f"{caller.name} has role {caller.role}; this needs {role} or above")
        desk.auth.check_csrf(request, caller)
        return caller

    return dependency
