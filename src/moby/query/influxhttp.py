"""InfluxDB 1.x's HTTP conventions the proxy follows: its error shape and parameters (credentials:
:func:`moby.access.influx_credential`)."""

from __future__ import annotations

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
