"""Small networking helpers shared by every stage: MQTT URLs, TLS contexts, backoff."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        parts = urlsplit(url)
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def display(self) -> str:
        """The broker as a URL fit for logs: its user, never its password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def connection_identity(username: str, index: int) -> str:
    """The broker identity (username, and so client id) of connection ``index`` of one principal.

    A broker set up by ``moby broker`` (or deploy/emqx) binds every client id to its username, so
    one username holds one connection: a second connection with it takes the first one's place.
    A gateway registered with ``--connections N`` (``moby simulate`` opens one connection per 500
    sensors) is therefore N identities sharing one password: ``NAME`` for the first connection,
    ``NAME.1`` … ``NAME.{N-1}`` for the others (docs/BROKER.md).
    """
    return username if index == 0 else f"{username}.{index}"


def tls_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server (against ca_file or the system store), TLS ≥ 1.2."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


class Backoff:
    """Exponential backoff with "equal jitter": a random delay between half and all of the step."""

    def __init__(self, initial: float = 0.2, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
