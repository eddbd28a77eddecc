"""InfluxDB 1.x's HTTP conventions the proxy follows: its error shape, parameters and credentials.

Authentication is a small swappable function (:data:`Authenticator`): the proxy asks it who made
a request and never looks at credentials itself — :func:`token_authenticator` takes MOBY's API
tokens (:mod:`moby.access`); parsing, forwarding and caching only see the :class:`Identity`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from moby.access import AccessPolicy, Identity, Refusal, influx_credential
from moby.tokens import Role

# Bytes of a form body the proxy reads: a query, not a data upload (data enters through MQTT).
MAX_BODY_BYTES: Final = 1024 * 1024


class BadRequest(ValueError):
    """The request itself is malformed (HTTP 400)."""


def influx_error(message: str, status: int, version: str = "") -> Response:
    headers = {"X-Influxdb-Version": version} if version else {}
    return Response(orjson.dumps({"error": message}) + b"\n", status, headers, "application/json")


async def _body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def canonical_params(request: Request, max_body_bytes: int = MAX_BODY_BYTES) -> dict[str, str]:
    """The request's one set of parameters: the URL's and, for a form POST, the body's.

    A name given twice — twice in the URL, twice in the body, or in both — is refused: InfluxDB
    would pick one copy by its own precedence (body first) while a cache or a check might read
    another, so no copy is trusted. A POST body that is not a form is refused too.
    """
    pairs = urllib.parse.parse_qsl(request.url.query, keep_blank_values=True)
    if request.method == "POST":
        body = await _body(request, max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/x-www-form-urlencoded":
            pairs += urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        elif body.strip():
            raise BadRequest(
                f"a POST body must be application/x-www-form-urlencoded, not {content_type or 'untyped'}"
            )
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise BadRequest(f'parameter "{name}" is given more than once (in the URL and/or the body)')
        params[name] = value
    return params


# (request, its canonical parameters) → who made it, or the answer refusing it.
Authenticator = Callable[[Request, dict[str, str]], Awaitable[Identity | Response]]


def token_authenticator(access: AccessPolicy, version: Callable[[], str] = str) -> Authenticator:
    """MOBY's API tokens, taken as InfluxDB clients send credentials
    (:func:`moby.access.influx_credential`) and required as the API requires them
    (``MOBY_API_AUTH`` and where the process listens); a refusal is InfluxDB's own 401/403."""

    async def authenticate(request: Request, params: dict[str, str]) -> Identity | Response:
        try:
            return access.authorize(
                influx_credential(request.headers, params), Role.VIEWER, "the InfluxQL proxy"
            )
        except Refusal as refusal:
            # InfluxDB's own messages, which its clients (and Grafana) show as they are.
            message = (
                "unable to parse authentication credentials" if refusal.missing else "authorization failed"
            )
            response = influx_error(f"{message}: {refusal.message}", refusal.status, version())
            if refusal.status == 401:
                response.headers["WWW-Authenticate"] = 'Basic realm="moby", Bearer realm="moby"'
            return response

    return authenticate
