"""InfluxDB 1.x's HTTP conventions the proxy follows: its error shape, parameters and credentials."""

from __future__ import annotations

import base64
import binascii
import hmac
import urllib.parse

import orjson
from starlette.requests import Request
from starlette.responses import Response


def influx_error(message: str, status: int, version: str = "") -> Response:
    headers = {"X-Influxdb-Version": version} if version else {}
    return Response(orjson.dumps({"error": message}) + b"\n", status, headers, "application/json")


async def request_params(request: Request) -> dict[str, str]:
    """URL parameters and, for a form POST, the form's (which win, as in InfluxDB)."""
    params = dict(request.query_params)
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        body = (await request.body()).decode("utf-8", "replace")
        params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
    return params


def authenticate(
    request: Request, params: dict[str, str], username: str | None, password: str | None, version: str = ""
) -> Response | None:
    """None when no credentials are configured or the request carries the right ones; else
    InfluxDB's 401. Accepted as InfluxDB accepts them: ``u``/``p`` parameters, basic auth, or
    ``Authorization: Token user:pass`` (1.8+)."""
    if not username:
        return None
    user, given = params.get("u"), params.get("p")
    if user is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, given = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = None
        elif scheme.lower() == "token":
            user, _, given = value.partition(":")
    if user is None:
        return influx_error("unable to parse authentication credentials", 401, version)
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    ok_password = hmac.compare_digest((given or "").encode(), (password or "").encode())
    if not (ok_user and ok_password):
        return influx_error("authorization failed", 401, version)
    return None
