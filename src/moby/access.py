"""Who may use the HTTP API and the InfluxQL proxy: one policy, shared by both.

* Tokens are required when the process listens beyond loopback (``MOBY_API_AUTH=auto``, the
  default), always (``required``) or never (``off``, refused beyond loopback: there is no
  override, because an open API on a network is the hole this closes).
* Roles are ordered, ``viewer`` < ``operator`` < ``admin``; an endpoint names the least it needs.
* When tokens are not required, every request is the anonymous identity with every role
  (the API is as open as loopback makes it) and credentials are not looked at.

This module is not part of a pipeline stage: the proxy (:mod:`moby.query`) and the API
(:mod:`moby.api`) both use it, so it sits beside :mod:`moby.config`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import structlog

from moby.config import Settings
from moby.tokens import Role, TokenStore, store_path

log = structlog.get_logger(__name__)

AuthMode = Literal["auto", "required", "off"]
WILDCARDS: Final = frozenset({"", "0.0.0.0", "::", "*"})


class AccessConfigError(Exception):
    """A configuration the access policy refuses to start with (one line, for a person)."""


class Refusal(Exception):
    """A request the policy refuses: 401 (no or a bad credential) or 403 (a role too low)."""

    def __init__(self, status: int, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.missing = missing  # no credential at all (as opposed to a wrong one)


@dataclass(frozen=True)
class Identity:
    """Who made a request: a token's name and role, or the anonymous identity."""

    name: str
    role: Role
    token_id: str | None = None

    @property
    def key(self) -> str:
        """Stable and secret-free: what caches may key answers by."""
        return f"token:{self.token_id}" if self.token_id else "anonymous"


ANONYMOUS: Final = Identity("anonymous", Role.ADMIN)


def normalize_host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1, ::ffff:127.x).

    Any other name counts as beyond loopback, without asking DNS: a name may resolve to a
    public address tomorrow, so it gets the safe answer (tokens required).
    """
    name = normalize_host(host)
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def tokens_required(mode: AuthMode, listen: Iterable[str]) -> bool:
    """Whether ``mode`` requires tokens for a process listening on ``listen``; AccessConfigError
    for ``off`` beyond loopback."""
    beyond = sorted({h for h in listen if not is_loopback(h)})
    if mode == "off" and beyond:
        raise AccessConfigError(
            f"MOBY_API_AUTH=off is refused while the API listens beyond loopback ({', '.join(beyond)}): "
            "use MOBY_API_AUTH=auto or required with tokens (moby token create), or listen on 127.0.0.1"
        )
    return mode == "required" or (mode == "auto" and bool(beyond))


class AccessPolicy:
    def __init__(
        self,
        store: TokenStore | None,
        *,
        required: bool,
        mode: AuthMode = "auto",
        beyond_loopback: tuple[str, ...] = (),
    ) -> None:
        if required and store is None:
            raise ValueError("tokens are required but there is no token store")
        self.store = store
        self.required = required
        self.mode = mode
        self.beyond_loopback = beyond_loopback
        self._logged_error: str | None = None

    @classmethod
    def open(cls) -> AccessPolicy:
        """No tokens required (loopback default; tests of other parts)."""
        return cls(None, required=False)

    @classmethod
    def from_settings(cls, settings: Settings, listen: Iterable[str]) -> AccessPolicy:
        """The policy for a process listening on ``listen`` (AccessConfigError: refused)."""
        listen = tuple(listen)
        if settings.proxy_username or settings.proxy_password:
            raise AccessConfigError(
                "MOBY_PROXY_USERNAME/MOBY_PROXY_PASSWORD are no longer used: the proxy takes API tokens "
                "(moby token create --role viewer; Grafana sends the token as its password): unset them"
            )
        required = tokens_required(settings.api_auth, listen)
        store = TokenStore(store_path(settings.data_dir, settings.api_tokens_file))
        beyond = tuple(sorted({h for h in listen if not is_loopback(h)}))
        return cls(store, required=required, mode=settings.api_auth, beyond_loopback=beyond)

    def startup_report(self) -> None:
        """Say loudly, once, what the policy is when it matters."""
        if self.beyond_loopback:
            log.warning(
                f"the HTTP API listens beyond loopback ({', '.join(self.beyond_loopback)}): "
                "every endpoint except /healthz, /readyz and the console's files needs an API token"
            )
        if self.required and self.store is not None:
            self.store.refresh()
            if self.store.error:
                log.error(f"API tokens unusable, every request will be refused: {self.store.error}")
                self._logged_error = self.store.error
            elif self.store.active_count() == 0:
                log.warning(
                    f"API tokens are required and none exist yet in {self.store.path}: "
                    "create one with `moby token create --role viewer`"
                )

    def authorize(self, credential: str | None, role: Role, what: str) -> Identity:
        """The identity behind ``credential`` if it may do ``what`` (which needs ``role``)."""
        if not self.required:
            return ANONYMOUS
        assert self.store is not None
        if not credential:
            raise Refusal(401, f"{what} needs an API token (moby token create)", missing=True)
        record = self.store.verify(credential)
        if self.store.error != self._logged_error:  # once per state change, not per request
            self._logged_error = self.store.error
            if self.store.error:
                log.error(f"API tokens unusable, every request will be refused: {self.store.error}")
            else:
                log.info("API tokens readable again", path=str(self.store.path))
        if record is None:
            raise Refusal(401, "the API token is unknown, revoked or malformed")
        if record.role < role:
            raise Refusal(
                403,
                f"the token {record.name!r} has the role {record.role.label}; "
                f"{what} needs {role.label} or above",
            )
        return Identity(record.name, record.role, record.id)


# --- credentials as clients send them ---------------------------------------------------------------
def bearer_credential(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the API's one way)."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def influx_credential(headers: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The token as an InfluxDB 1.x client can send it (Grafana's data source, the influx CLI,
    the Python client): ``Authorization: Bearer <token>``; HTTP basic auth with the token as the
    password (any user name); ``Authorization: Token <user>:<token>``; or the ``p`` parameter.
    The header wins over the parameter. An empty password counts as none."""
    header = headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        match scheme.lower():
            case "bearer":
                return value or None
            case "basic":
                try:
                    decoded = base64.b64decode(value, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    return "\x00malformed"  # present but unreadable: refused, not ignored
                return decoded.partition(":")[2] or None
            case "token":
                return value.rpartition(":")[2] or None
    return params.get("p") or None
