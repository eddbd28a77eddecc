"""One MQTT session loop for every client: the backend, the edge agent's links, the simulator's gateways.

    connect (failing over between brokers) → subscribe → serve → lost → backoff with jitter → again

for ever. What can go wrong is one hierarchy (:mod:`moby.mqtt.errors`, every error a
``ConnectionError``), handled here in one place, so no client can die of an error another one
survives: a refused CONNECT or SUBSCRIBE (wrong password, an ACL, a broker restarting or
overloaded) is retried with backoff exactly like an unreachable broker, never ends the loop.

Logging is once per *state change*: the first refusal is logged with its reason code and a hint
(naming the URL's user, never the password), the same refusal again is quiet, a different one
is logged, and while nothing changes a summary every :data:`SUMMARY_S` says how long and how many
attempts. Connecting again is logged with how long it took.

The backoff starts at ``reconnect_initial_s`` and doubles up to ``reconnect_max_s``, each delay
drawn between half and all of its step (jitter, so a fleet does not reconnect in lockstep after a
broker restart). It starts again from the bottom only after a connection that lasted
:data:`STABLE_S`, so a broker that accepts and then drops us at once is not hammered.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from moby.mqtt.connection import (
    MqttConnection,
    OversizedHandler,
    PublishHandler,
    SessionOptions,
    keepalive,
    open_connection,
    subscribe,
)
from moby.mqtt.errors import MqttError, ProtocolError, Refused, hint
from moby.net import Backoff, MqttEndpoint

log = structlog.get_logger(__name__)

SUMMARY_S = 60.0  # while failing, one summary line this often
STABLE_S = 10.0  # a connection that lived this long starts the backoff again from the bottom

# serve(connection, session_present): runs while connected. Raising ConnectionError/TimeoutError,
# or the connection closing, means "lost" (reconnect); returning normally with the connection
# still open means the client is done (run() returns and leaves the connection to it).
Serve = Callable[[MqttConnection, bool], Awaitable[None]]
_DONE: Final = object()


@dataclass(frozen=True)
class SessionPlan:
    brokers: Sequence[MqttEndpoint]
    options: Callable[[MqttEndpoint], SessionOptions]
    subscriptions: Sequence[str] = ()
    subscribe_qos: int = 1
    ssl_context: ssl.SSLContext | None = None
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 5.0
    client: str = "mqtt client"  # who, in the logs: "backend", "sensor temp-1", "gateway sim-gw-00"
    source: str = "the broker URL"  # where the URL came from, named in hints: "MOBY_MQTT_URL"

    def __post_init__(self) -> None:
        if not self.brokers:
            raise ValueError("a session needs at least one broker")


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    return str(exc) or type(exc).__name__


def _state(stage: str, exc: BaseException) -> tuple[str, ...]:
    """What makes two failures "the same" for logging: the stage and the kind, not the text."""
    if isinstance(exc, Refused):
        return (stage, exc.packet, str(exc.code))
    if isinstance(exc, OSError) and exc.errno is not None:
        return (stage, type(exc).__name__, str(exc.errno))
    return (stage, type(exc).__name__)


class MqttSession:
    def __init__(
        self,
        plan: SessionPlan,
        on_publish: PublishHandler,
        serve: Serve,
        *,
        on_oversized: OversizedHandler | None = None,
        gate: Callable[[], Awaitable[object]] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self._on_publish = on_publish
        self._on_oversized = on_oversized
        self._serve = serve
        self._gate = gate  # awaited before every attempt (the simulator's network cut)
        self._on_failure = on_failure  # called with a short kind per failed attempt (metrics)
        self._backoff = Backoff(plan.reconnect_initial_s, plan.reconnect_max_s)
        self.conn: MqttConnection | None = None
        self.endpoint: MqttEndpoint | None = None  # the broker of the current connection
        self.connected = asyncio.Event()
        self.connections = 0  # successful connections, ever
        self._attempt = 0
        self._states: dict[int, tuple[str, ...]] = {}  # per broker: the failure last logged
        self._down_since: float | None = None
        self._failures = 0
        self._summary_at = 0.0

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    async def run(self) -> None:
        """Connect, serve, reconnect, for ever (until cancelled, or until serve says it is done)."""
        plan = self.plan
        while True:
            if self._gate is not None:
                await self._gate()
            index = self._attempt % len(plan.brokers)
            self._attempt += 1
            endpoint = plan.brokers[index]
            options = plan.options(endpoint)
            try:
                conn, present = await open_connection(
                    endpoint.host,
                    endpoint.port,
                    options,
                    self._on_publish,
                    on_oversized=self._on_oversized,
                    ssl_context=plan.ssl_context if endpoint.tls else None,
                )
            except (OSError, TimeoutError, ValueError) as exc:  # MqttError is a ConnectionError, an OSError
                await self._failed(index, endpoint, "connect", exc)
                continue
            try:
                if plan.subscriptions:
                    await subscribe(conn, plan.subscriptions, plan.subscribe_qos)
            except (OSError, TimeoutError, ValueError) as exc:
                conn.abort()
                await self._failed(index, endpoint, "subscribe", exc)
                continue
            up_at = time.monotonic()
            self._up(endpoint, conn, present)
            pinger = asyncio.create_task(keepalive(conn, options.keepalive_s))
            try:
                reason = await self._serve_until_lost(conn, present)
            finally:
                pinger.cancel()
                self.connected.clear()
            if reason is _DONE:
                return
            self.conn = None
            conn.abort()
            self._lost(endpoint, reason if isinstance(reason, BaseException) else None)
            if time.monotonic() - up_at >= STABLE_S:
                self._backoff.reset()
            await asyncio.sleep(self._backoff.next())

    async def _serve_until_lost(self, conn: MqttConnection, present: bool) -> object:
        serving = asyncio.ensure_future(self._serve(conn, present))
        either: set[asyncio.Future[Any]] = {serving, conn.closed}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not serving.done():
                serving.cancel()
                await asyncio.wait({serving})
        error: BaseException | None = None
        if not serving.cancelled():
            error = serving.exception()
            if error is None and not conn.closed.done():
                return _DONE
            if error is not None and not isinstance(error, (ConnectionError, TimeoutError)):
                conn.abort()
                raise error  # a bug in the client: its supervisor logs it and restarts the task
        if conn.closed.done():
            return conn.closed.result() or error
        return error

    # -- state changes, logged once -------------------------------------------------------------
    def _up(self, endpoint: MqttEndpoint, conn: MqttConnection, present: bool) -> None:
        self.conn, self.endpoint = conn, endpoint
        self.connections += 1
        self.connected.set()
        fields: dict[str, object] = {"client": self.plan.client, "broker": endpoint.display}
        if self.plan.subscriptions:
            fields["subscriptions"] = list(self.plan.subscriptions)
        if self._down_since is not None:
            fields["after_s"] = round(time.monotonic() - self._down_since, 1)
            fields["attempts"] = self._failures + 1
        log.info("connected to the broker", session_present=present, **fields)
        self._states.clear()
        self._down_since = None
        self._failures = 0

    def _lost(self, endpoint: MqttEndpoint, reason: BaseException | None) -> None:
        self._down_since = self._summary_at = time.monotonic()
        self._failures = 0
        fields: dict[str, object] = {"client": self.plan.client, "broker": endpoint.display}
        tip = hint(reason, user=endpoint.username, source=self.plan.source) if reason else None
        if tip:
            fields["hint"] = tip
        log.warning("lost the broker; reconnecting with backoff", error=describe(reason), **fields)

    async def _failed(self, index: int, endpoint: MqttEndpoint, stage: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._summary_at = now
        self._failures += 1
        delay = self._backoff.next()
        if self._on_failure is not None:
            self._on_failure(f"{stage}_refused_{exc.code}" if isinstance(exc, Refused) else f"{stage}_failed")
        state = _state(stage, exc)
        if self._states.get(index) != state:
            self._states[index] = state
            self._log_failure(endpoint, stage, exc)
        elif now - self._summary_at >= SUMMARY_S:
            self._summary_at = now
            log.warning(
                "still not connected to the broker",
                client=self.plan.client,
                broker=endpoint.display,
                down_s=round(now - self._down_since),
                attempts=self._failures,
                error=describe(exc),
            )
        await asyncio.sleep(delay)

    def _log_failure(self, endpoint: MqttEndpoint, stage: str, exc: BaseException) -> None:
        fields: dict[str, object] = {
            "client": self.plan.client,
            "broker": endpoint.display,
            "error": describe(exc),
            "retrying": f"with backoff up to {self.plan.reconnect_max_s:g} s, quiet until this changes",
        }
        if isinstance(exc, Refused):
            fields["code"] = f"0x{exc.code:02X}"
            fields["reason"] = exc.reason
        tip = hint(exc, user=endpoint.username, source=self.plan.source)
        if tip:
            fields["hint"] = tip
        if isinstance(exc, Refused):
            what = (
                "the broker refused the subscription"
                if stage == "subscribe"
                else "the broker refused the connection"
            )
            log.error(what, **fields)
        elif isinstance(exc, ssl.SSLError | ProtocolError) or (
            isinstance(exc, MqttError) and stage == "connect"
        ):
            log.error("cannot talk to the broker", **fields)
        else:
            log.warning("broker unreachable", **fields)
