"""API tokens on FastAPI endpoints: one dependency per role.

An endpoint names the least role it needs in its decorator, and that is the whole wiring::

    @app.get("/api/v1/sensors", dependencies=[guard.viewer])
    @app.post("/api/v1/sensors/{sensor_id}/commands", dependencies=[guard.operator])  # one line

Tokens come as ``Authorization: Bearer <token>``; the scheme is declared in the OpenAPI
document, so ``/docs`` offers "Authorize". 401 answers carry ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from moby.access import AccessPolicy, Identity, Refusal
from moby.tokens import Role

# auto_error=False: a missing header is ours to answer (or to let through when tokens are not
# required), not FastAPI's 403.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="API token",
    description="`moby token create --role viewer|operator|admin` (needed beyond loopback)",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _challenge(refusal: Refusal) -> str:
    if refusal.status != 401:
        return ""
    return 'Bearer realm="moby"' if refusal.missing else 'Bearer realm="moby", error="invalid_token"'


class Guard:
    """The role dependencies of one app, over its access policy."""

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy
        self.viewer: Any = Depends(self.require(Role.VIEWER))
        self.operator: Any = Depends(self.require(Role.OPERATOR))
        self.admin: Any = Depends(self.require(Role.ADMIN))

    def require(self, role: Role) -> Callable[[Request, Credentials], Awaitable[Identity]]:
        policy = self.policy

        async def identity(request: Request, credentials: Credentials) -> Identity:
            token = credentials.credentials if credentials else None
            try:
                return policy.authorize(token, role, f"{request.method} {request.url.path}")
            except Refusal as refusal:
                challenge = _challenge(refusal)
                raise HTTPException(
                    refusal.status,
                    refusal.message,
                    headers={"WWW-Authenticate": challenge} if challenge else None,
                ) from None

        identity.__name__ = f"requires_{role.label}"
        return identity
