"""``driver = "opcua"``: variables of an OPC UA server — a PLC, a machine controller (asyncua).

One sensor is a set of variables (``nodes``), each by node id (``ns=2;s=Line1.Oven.Temp``) or
browse path (``0:Objects/2:Line1/2:Oven/2:Temp``), read by a subscription (data changes, the
server's publishing interval = the sensor's ``interval_s``) or by polling. Every value keeps its
OPC UA status: Good → quality ``good``, Uncertain → ``uncertain``, Bad → ``bad`` (a reading's
quality is the worst of its values). A value that cannot be sent as a number (a Bad status with
no value, a string) is never dropped silently: it is counted (``opcua_no_value``,
``opcua_type``) and logged.

Sensors on one endpoint with the same security and user share one session (PLCs allow few), each
with a subscription of its own. Faults: ``opcua_unreachable``, ``opcua_timeout``,
``opcua_refused`` (the server refused the session: user, certificate, policy),
``opcua_bad_node`` (an unknown node id or browse path), ``opcua_overflow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from moby.edge.devices.base import DeviceFault, DeviceRefused, DeviceStatus, Sample, now_ms, ticks
from moby.edge.devices.sensor import DeviceSensor, Finite, Seconds, Unit, ValueName
from moby.net import Backoff
from moby.schema.payloads import Quality

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client
    from asyncua.common.node import Node

NODE_ID_RE = re.compile(r"^(ns=\d{1,5};|nsu=[^;]{1,512};)?[isgb]=.{1,4096}$", re.S)
BROWSE_PATH_RE = re.compile(r"^\d{1,5}:[^/]{1,256}(/\d{1,5}:[^/]{1,256}){0,31}$")
RECONNECT_MAX_S = 5.0
QUEUE_MAX = 10_000  # data changes waiting for the sampler; beyond: counted as opcua_overflow
POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
# Status codes that mean "this node does not exist here": a configuration mistake.
UNKNOWN_NODE = (
    "BadNodeIdUnknown",
    "BadNodeIdInvalid",
    "BadAttributeIdInvalid",
    "BadNoMatch",
    "BadBrowseNameInvalid",
)
# Status codes of a refused session: retrying with the same settings does not help.
REFUSED_SESSION = (
    "BadIdentityToken",
    "BadUserAccessDenied",
    "BadSecurity",
    "BadCertificate",
    "BadNotConnected",
)


def _node_id(text: str) -> str:
    if not NODE_ID_RE.match(text):
        raise ValueError("should be an OPC UA node id such as ns=2;s=Line1.Temp or ns=3;i=1001")
    return text


def _browse_path(text: str) -> str:
    if not BROWSE_PATH_RE.match(text):
        raise ValueError("should be namespace:name steps from the root, e.g. 0:Objects/2:Line1/2:Temp")
    return text


def _endpoint(url: str) -> str:
    if not re.match(r"^opc\.tcp://[^/\s:]+(:\d{1,5})?(/\S*)?$", url):
        raise ValueError("should be opc.tcp://HOST[:PORT][/PATH]")
    return url


class OpcUaNode(BaseModel):
    """One variable: a value name, where it is, how to scale it."""

    model_config = ConfigDict(extra="forbid")

    name: ValueName
    node_id: Annotated[str, AfterValidator(_node_id)] | None = None
    browse_path: Annotated[str, AfterValidator(_browse_path)] | None = None
    scale: Finite = 1.0
    offset: Finite = 0.0
    units: Unit = ""

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaNode:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError(f"node {self.name!r}: give either node_id or browse_path (exactly one)")
        return self


def _unique(nodes: list[OpcUaNode]) -> list[OpcUaNode]:
    names = [n.name for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"value names used twice: {dupes}")
    return nodes


class OpcUaSensor(DeviceSensor):
    driver: Literal["opcua"]
    endpoint: Annotated[str, AfterValidator(_endpoint)]
    mode: Literal["subscription", "polling"] = "subscription"
    security_policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: Path | None = None  # the client's certificate (DER or PEM)
    private_key: Path | None = None
    server_certificate: Path | None = None  # pinned; when left out, taken from the endpoint list
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password_file: Path | None = None  # a file holding the password (never in agent.toml)
    timeout_s: Seconds = 5.0
    # auto: the value's source time for subscriptions, the time of the read for polling
    timestamp: Literal["auto", "source", "server", "gather"] = "auto"
    nodes: Annotated[list[OpcUaNode], Field(min_length=1, max_length=100), AfterValidator(_unique)]

    @model_validator(mode="after")
    def _security(self) -> OpcUaSensor:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode go together: both None, or a policy "
                f"({', '.join(POLICIES[1:])}) with Sign or SignAndEncrypt"
            )
        if self.security_policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security_policy {self.security_policy} needs certificate and private_key")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together (anonymous: neither)")
        return self


# -- pure parts ----------------------------------------------------------------------------------
def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA severity (the top two bits): 00 Good, 01 Uncertain, 10/11 Bad."""
    if status is None:
        return Quality.GOOD
    severity = (int(status.value) >> 30) & 0b11
    return Quality.GOOD if severity == 0 else Quality.UNCERTAIN if severity == 1 else Quality.BAD


_RANK = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}


def worst(qualities: Sequence[Quality]) -> Quality:
    return max(qualities, key=_RANK.__getitem__, default=Quality.GOOD)


def number_of(value: Any) -> float | None:
    """A variant's value as a float; None when it is not a single number or boolean."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def epoch_ms(stamp: dt.datetime | None) -> int | None:
    if stamp is None or stamp.year < 1971:  # OPC UA's "no time" is 1601-01-01
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Change:
    index: int  # into the sensor's nodes
    value: ua.DataValue
    received_ms: int


# -- sessions shared by the sensors on one endpoint ---------------------------------------------
class _Session:
    def __init__(self, cfg: OpcUaSensor) -> None:
        self.cfg = cfg
        self.client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._backoff = Backoff(0.5, RECONNECT_MAX_S)
        self._retry_at = 0.0
        self._why: DeviceFault | None = None

    def _connected(self, client: Client) -> bool:
        from asyncua.client.ua_client import UaClientState

        return client.uaclient.state is UaClientState.CONNECTED

    async def get(self) -> Client:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self.client = loop, asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:
            if self.client is not None and self._connected(self.client):
                return self.client
            if time.monotonic() < self._retry_at and self._why is not None:
                raise self._why
            await self.drop()
            try:
                client = await self._connect()
            except DeviceFault as fault:
                self._why = fault
                self._retry_at = time.monotonic() + self._backoff.next()
                raise
            self._backoff.reset()
            self.client = client
            return client

    async def _connect(self) -> Client:
        from asyncua.client.client import Client
        from asyncua.ua.uaerrors import UaError, UaStatusCodeError

        cfg = self.cfg
        client = Client(cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=min(cfg.timeout_s, 2.0))
        try:
            if cfg.security_policy != "None":
                parts = [cfg.security_policy, cfg.security_mode, str(cfg.certificate), str(cfg.private_key)]
                if cfg.server_certificate is not None:
                    parts.append(str(cfg.server_certificate))
                await asyncio.wait_for(client.set_security_string(",".join(parts)), cfg.timeout_s * 2)
            if cfg.username is not None and cfg.password_file is not None:
                client.set_user(cfg.username)
                client.set_password(cfg.password_file.read_text().rstrip("\r\n"))
            await asyncio.wait_for(client.connect(), cfg.timeout_s * 2)
        except UaStatusCodeError as exc:
            await _quietly_disconnect(client)
            name = type(exc).__name__
            if name.startswith(REFUSED_SESSION):
                key = "username" if "Identity" in name or "User" in name else "security_policy"
                raise DeviceRefused("refused", f"the server refuses the session: {name}", key=key) from None
            raise DeviceFault("unreachable", f"{cfg.endpoint}: {name}", key="endpoint") from None
        except (OSError, ConnectionError, UaError) as exc:
            await _quietly_disconnect(client)
            raise DeviceFault(
                "unreachable", f"{cfg.endpoint}: {exc or type(exc).__name__}", key="endpoint"
            ) from None
        except TimeoutError:
            await _quietly_disconnect(client)
            raise DeviceFault(
                "timeout", f"{cfg.endpoint}: no session within {cfg.timeout_s * 2:g} s", key="endpoint"
            ) from None
        return client

    async def drop(self, client: Client | None = None) -> None:
        """Forget the session (the one given, if it is still the current one)."""
        if self.client is None or (client is not None and client is not self.client):
            return
        old, self.client = self.client, None
        await _quietly_disconnect(old)


async def _quietly_disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2)


_SESSIONS: weakref.WeakValueDictionary[tuple[object, ...], _Session] = weakref.WeakValueDictionary()


def session_for(cfg: OpcUaSensor) -> _Session:
    key = (cfg.endpoint, cfg.security_policy, cfg.security_mode, cfg.certificate, cfg.username, cfg.timeout_s)
    session = _SESSIONS.get(key)
    if session is None:
        session = _Session(cfg)
        _SESSIONS[key] = session
    return session


class _Handler:
    """asyncua's subscription callbacks → a bounded queue the sampler drains."""

    def __init__(self, indexes: Mapping[Any, int], status: DeviceStatus) -> None:
        self.indexes = indexes
        self.status = status
        self.queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_MAX)

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        index = self.indexes.get(node.nodeid)
        if index is None:
            return
        try:
            self.queue.put_nowait(Change(index, data.monitored_item.Value, now_ms()))
        except asyncio.QueueFull:
            self.status.soft_fault("overflow", "more data changes than the agent can buffer; dropped")

    def status_change_notification(self, status: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # the subscription is gone (shutdown, lost session)
            self.queue.put_nowait(None)


class OpcUaDriver:
    driver = "opcua"

    def __init__(self, cfg: OpcUaSensor) -> None:
        import logging

        # asyncua logs each failed attempt; the status below logs each change of state once
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        self.cfg = cfg
        self.sensor_type = cfg.type
        self.units: Mapping[str, str] = {n.name: n.units for n in cfg.nodes}
        self.session = session_for(cfg)
        self.status = DeviceStatus("opcua", cfg.sensor_id)
        self._nodes: list[Node] | None = None
        self._last: dict[int, float] = {}  # node index -> its last value
        self._resolved_by: Client | None = None

    @property
    def errors(self) -> Mapping[str, int]:
        return self.status.errors

    async def _resolve(self, client: Client) -> list[Node]:
        """Node ids as they are; browse paths looked up on the server (once per session)."""
        from asyncua.ua.uaerrors import UaStatusCodeError

        if self._nodes is not None and self._resolved_by is client:
            return self._nodes
        nodes = []
        for i, spec in enumerate(self.cfg.nodes):
            if spec.node_id is not None:
                nodes.append(client.get_node(spec.node_id))
                continue
            assert spec.browse_path is not None
            try:
                node = await client.nodes.root.get_child(spec.browse_path.split("/"))
            except UaStatusCodeError as exc:
                raise DeviceRefused(
                    "bad_node",
                    f"no such node on the server ({type(exc).__name__})",
                    key=f"nodes.{i}.browse_path",
                    value=spec.browse_path,
                ) from None
            nodes.append(node)
        self._nodes, self._resolved_by = nodes, client
        return nodes

    def _value(self, i: int, dv: ua.DataValue) -> float | None:
        """The node's scaled number, or None (counted and logged) when it has none.

        A Bad status carries no value (OPC UA has the server send null): the node's last value
        stands in, and the reading is marked bad, so the moment it went bad is stored — as a
        SCADA shows a tag's last value with Bad quality. With no value known yet, nothing.
        """
        spec = self.cfg.nodes[i]
        raw = dv.Value.Value if dv.Value is not None else None
        number = number_of(raw)
        if number is not None:
            value = number * spec.scale + spec.offset
            self._last[i] = value
            return value
        status = dv.StatusCode.name if dv.StatusCode is not None else "Good"
        if raw is not None:
            self.status.soft_fault("type", f"node {spec.name}: a {type(raw).__name__}, not a number")
        elif quality_of(dv.StatusCode) is not Quality.GOOD and i in self._last:
            return self._last[i]
        else:
            self.status.soft_fault("no_value", f"node {spec.name}: status {status}, no value known yet")
        return None

    def _time(self, dv: ua.DataValue, gathered_ms: int, *, polling: bool) -> int:
        mode = self.cfg.timestamp
        if mode == "auto":
            mode = "gather" if polling else "source"
        if mode == "source":
            return epoch_ms(dv.SourceTimestamp) or epoch_ms(dv.ServerTimestamp) or gathered_ms
        if mode == "server":
            return epoch_ms(dv.ServerTimestamp) or gathered_ms
        return gathered_ms

    def assemble(self, changes: Sequence[Change], *, polling: bool) -> list[Sample]:
        """Changes that arrived together → readings, one per distinct timestamp, in time order."""
        groups: dict[int, tuple[dict[str, float], list[Quality]]] = {}
        for change in changes:
            value = self._value(change.index, change.value)
            if value is None:
                continue
            ts = self._time(change.value, change.received_ms, polling=polling)
            values, qualities = groups.setdefault(ts, ({}, []))
            values[self.cfg.nodes[change.index].name] = value
            qualities.append(quality_of(change.value.StatusCode))
        return [Sample(ts, values, worst(qs)) for ts, (values, qs) in sorted(groups.items())]

    # -- polling -----------------------------------------------------------------------------
    async def read_once(self) -> list[Change]:
        """Read every node once (one Read request)."""
        from asyncua.ua.uaerrors import UaError

        client = await self.session.get()
        try:
            nodes = await asyncio.wait_for(self._resolve(client), self.cfg.timeout_s * 2)
            gathered = now_ms()
            values = await asyncio.wait_for(client.read_attributes(nodes), self.cfg.timeout_s * 2)
        except DeviceFault:
            raise
        except TimeoutError:
            await self.session.drop(client)
            raise DeviceFault("timeout", f"no answer within {self.cfg.timeout_s * 2:g} s") from None
        except (OSError, ConnectionError, UaError) as exc:
            await self.session.drop(client)
            raise DeviceFault("unreachable", f"{self.cfg.endpoint}: {exc or type(exc).__name__}") from None
        for i, dv in enumerate(values):
            if dv.StatusCode is not None and dv.StatusCode.name.startswith(UNKNOWN_NODE):
                spec = self.cfg.nodes[i]
                key, value = ("node_id", spec.node_id) if spec.node_id else ("browse_path", spec.browse_path)
                raise DeviceRefused(
                    "bad_node", f"the server says {dv.StatusCode.name}", key=f"nodes.{i}.{key}", value=value
                )
        return [Change(i, dv, gathered) for i, dv in enumerate(values)]

    async def _poll(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        async for _ in ticks(interval_s):
            try:
                changes = await self.read_once()
            except DeviceFault as fault:
                self.status.fault(fault)
                continue
            self.status.ok()
            for sample in self.assemble(changes, polling=True):
                yield sample

    # -- subscription --------------------------------------------------------------------------
    async def _subscribe(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        from asyncua import ua
        from asyncua.ua.uaerrors import UaError

        backoff = Backoff(0.5, RECONNECT_MAX_S)
        while True:
            client: Client | None = None
            subscription = None
            try:
                client = await self.session.get()
                nodes = await asyncio.wait_for(self._resolve(client), self.cfg.timeout_s * 2)
                handler = _Handler({n.nodeid: i for i, n in enumerate(nodes)}, self.status)
                interval = interval_s()
                subscription = await asyncio.wait_for(
                    client.create_subscription(interval * 1000, handler), self.cfg.timeout_s * 2
                )
                results = await asyncio.wait_for(
                    subscription.subscribe_data_change(nodes, sampling_interval=ua.Double(interval * 1000)),
                    self.cfg.timeout_s * 2,
                )
                for i, result in enumerate(results):
                    if isinstance(result, ua.StatusCode):
                        self.status.fault(
                            DeviceFault("bad_node", f"node {self.cfg.nodes[i].name}: {result.name}")
                        )
                async for sample in self._drain(client, handler, interval_s, interval):
                    backoff.reset()
                    yield sample
            except DeviceFault as fault:
                self.status.fault(fault)
            except TimeoutError:
                self.status.fault(DeviceFault("timeout", f"no answer within {self.cfg.timeout_s * 2:g} s"))
                await self.session.drop(client)
            except (OSError, ConnectionError, UaError) as exc:
                self.status.fault(
                    DeviceFault("unreachable", f"{self.cfg.endpoint}: {exc or type(exc).__name__}")
                )
                await self.session.drop(client)
            finally:
                if subscription is not None and client is not None and self.session._connected(client):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(subscription.delete(), 2)
            await asyncio.sleep(backoff.next())

    async def _drain(
        self, client: Client, handler: _Handler, interval_s: Callable[[], float], interval: float
    ) -> AsyncIterator[Sample]:
        """Data changes as readings until the session is lost or the interval changes."""
        while interval_s() == interval:
            try:
                first = await asyncio.wait_for(handler.queue.get(), 1.0)
            except TimeoutError:
                if not self.session._connected(client):
                    await self.session.drop(client)
                    raise DeviceFault("unreachable", f"{self.cfg.endpoint}: session lost") from None
                continue
            changes = [first]
            while not handler.queue.empty() and len(changes) < 1000:
                changes.append(handler.queue.get_nowait())
            if any(c is None for c in changes):
                await self.session.drop(client)
                raise DeviceFault("unreachable", f"{self.cfg.endpoint}: the subscription ended")
            self.status.ok()
            for sample in self.assemble([c for c in changes if c is not None], polling=False):
                yield sample

    def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        return self._poll(interval_s) if self.cfg.mode == "polling" else self._subscribe(interval_s)

    async def check(self) -> None:
        """A session, every node resolved and read once."""
        await self.read_once()
