"""Cross-site defences and security headers for every HTTP answer of the API and the proxy.

An API on loopback without tokens is still reachable from every web page its operator opens:
the browser is on the same machine. Two checks close that, before any endpoint runs:

* **Host allow-list** (DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 sends ``Host: evil.example``). Accepted: ``localhost``, IP address literals (a page
  reached by an address is not a rebound name), the hosts the process listens on, this machine's
  name when listening on every interface, and ``MOBY_API_ALLOWED_HOSTS``. Else 400.
* **Cross-site requests** (a page on another site making the browser send a request): refused
  (403) when ``Sec-Fetch-Site`` says ``cross-site``/``same-site`` or, from browsers that do not
  send it, ``Origin`` names another host — except a plain GET navigation (following a link) to
  something that is not the proxy. The proxy is refused cross-site even as a navigation: a GET
  there runs a query. Clients that are not browsers (Grafana's server side, curl, Prometheus)
  send neither header and are not affected.

``/healthz`` and ``/readyz`` skip the Host check (orchestrators probe them by whatever name).
Every answer, refusals included, carries ``Content-Security-Policy``, ``X-Content-Type-Options:
nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and
``Cross-Origin-Resource-Policy: same-origin``, unless the endpoint set its own.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import orjson
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from moby.access import WILDCARDS, AccessConfigError, normalize_host

log = structlog.get_logger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
_HOST_NAME: Final = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_PORT: Final = re.compile(r"^[0-9]{1,5}$")

# The console (api/static) is plain files: no inline script or style, nothing from elsewhere.
STRICT_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The /docs (Swagger UI) and /redoc pages are our own files with no inline script, their assets
# served by this backend (never a CDN); the UIs set inline styles, and ReDoc runs its search in
# a web worker it builds from a blob: URL of its own script.
DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DOCS_PATHS: Final = ("/docs", "/redoc")
SECURITY_HEADERS: Final = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
)
_LOGGED_HOSTS_MAX: Final = 64


def parse_host(header: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower case;
    None when it is not a well-formed one."""
    if len(header) > 260:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        inside, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _PORT.match(rest[1:]))):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, colon, port = header.partition(":")
    if colon and not _PORT.match(port):
        return None
    name = name.rstrip(".")
    return name if _HOST_NAME.match(name) else None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AllowedHosts:
    names: frozenset[str]
    any: bool = False

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        host = parse_host(header) if header else None
        return host is not None and (host in self.names or _is_address(host))

    @classmethod
    def build(cls, configured: str, listen: Iterable[str]) -> AllowedHosts:
        """``MOBY_API_ALLOWED_HOSTS`` (comma- or space-separated) plus the defaults."""
        listen = list(listen)
        names = {"localhost"}
        names.update(normalize_host(h) for h in listen if normalize_host(h) not in WILDCARDS)
        if any(normalize_host(h) in WILDCARDS for h in listen):
            names.add(socket.gethostname().lower())
        any_host = False
        for item in re.split(r"[,\s]+", configured.strip()):
            if not item:
                continue
            if item == "*":
                any_host = True
                continue
            host = parse_host(item)
            if host is None or host != item.lower().rstrip(".").strip("[]"):
                raise AccessConfigError(
                    f"MOBY_API_ALLOWED_HOSTS: {item!r} is not a host name (give names like "
                    "moby.example.com, comma-separated, without ports; '*' accepts any)"
                )
            names.add(host)
        return cls(frozenset(names), any_host)


def cross_site(headers: Headers) -> str | None:
    """Why a browser sent this request from another site, or None."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return None if site.lower() in ("same-origin", "none") else f"Sec-Fetch-Site: {site[:40]}"
    origin = headers.get("origin")
    if origin is None:
        return None
    authority = origin.partition("://")[2].lower()
    if authority and authority == headers.get("host", "").lower():
        return None
    return f"Origin: {origin[:100]}"


def content_security_policy(path: str) -> str:
    return DOCS_CSP if path.startswith(DOCS_PATHS) else STRICT_CSP


class WebGuard:
    """ASGI middleware: the Host allow-list, the cross-site refusal and the security headers.

    ``proxy_prefixes``: paths of the InfluxQL proxy (refused cross-site even as navigations,
    refusals in InfluxDB's error shape).
    """

    def __init__(self, app: ASGIApp, *, hosts: AllowedHosts, proxy_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.proxy_prefixes = proxy_prefixes
        self._logged_hosts: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = content_security_policy(path)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (("content-security-policy", csp), *SECURITY_HEADERS):
                    if name not in headers:
                        headers[name] = value
            await send(message)

        headers = Headers(scope=scope)
        proxy = path.startswith(self.proxy_prefixes) if self.proxy_prefixes else False
        host = headers.get("host")
        if path not in OPEN_PATHS and not self.hosts.allows(host):
            self._log_host(host)
            await self._refuse(
                send_secured,
                400,
                f"Host {(host or '')[:100]!r} is not served here: add it to MOBY_API_ALLOWED_HOSTS",
                proxy,
            )
            return
        reason = cross_site(headers)
        if reason is not None:
            navigation = scope["method"] in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate"
            if proxy or not navigation:
                await self._refuse(send_secured, 403, f"cross-site request refused ({reason})", proxy)
                return
        await self.app(scope, receive, send_secured)

    def _log_host(self, host: str | None) -> None:
        shown = (host or "")[:100]
        if shown not in self._logged_hosts and len(self._logged_hosts) < _LOGGED_HOSTS_MAX:
            self._logged_hosts.add(shown)
            log.warning(
                f"refused a request for Host {shown!r}: add it to MOBY_API_ALLOWED_HOSTS if it is ours"
            )

    @staticmethod
    async def _refuse(send: Send, status: int, message: str, proxy: bool) -> None:
        body = orjson.dumps({"error": message} if proxy else {"detail": message}) + b"\n"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
