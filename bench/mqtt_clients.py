#!/usr/bin/env python3
"""QoS 1 receive-and-acknowledge throughput of Python MQTT subscriber styles.

Starts a private Mosquitto (never the system one) on a free 127.0.0.1 port in a
temporary directory, then for each client style:

1. spawns the subscriber in its own Python process (no shared event loop), which
   connects with a persistent MQTT v5 session (clean start off, fixed client id,
   session expiry 3600 s, Receive Maximum 65535), subscribes QoS 1 to ``bench/#``
   and signals readiness;
2. publishes N small JSON lines at QoS 1 with ``mosquitto_pub -l -q 1 -t bench/x``;
3. has the subscriber time first-to-last received message and report how many
   arrived.

``--mode live`` is the above: the subscriber is online while publishing, so on
this 2-core box it is capped by (and competes for CPU with) the publisher.
``--mode backlog`` parks the persistent session first (subscribe, disconnect),
lets the broker queue all N, then reconnects with clean start off and times the
drain: that is the subscriber's own receive+ack capacity (and the "consumer
restarted with a backlog" case). ``both`` (default) runs each.

A fresh broker is used for every run, so sessions and queues left by one client
cannot tax the next. The publisher-alone rate (same publisher, topic with no
subscriber) is the ceiling.

Mosquitto 2.0.11 note: for MQTT v5 clients the broker's per-client window of
unacked outbound QoS 1/2 messages is the client's CONNECT Receive Maximum, in
either direction (it overrides max_inflight_messages); only when the client
omits it does max_inflight_messages (default 20) apply. Both libraries omit it
unless asked, hence Receive Maximum 65535 here.

Client styles:

* ``paho``: paho-mqtt 2.x, ``loop_start()`` network thread, sync ``on_message``
  (paho sends the PUBACK after ``on_message`` returns).
* ``gmqtt-optimistic``: gmqtt, ``optimistic_acknowledgement=True`` (default),
  sync ``on_message`` (PUBACK is written *before* ``on_message`` runs).
* ``gmqtt-ack-after``: gmqtt, ``optimistic_acknowledgement=False``,
  ``async def on_message`` returning 0; the PUBACK goes out from the task's
  done-callback, i.e. only after the coroutine returned ("ack after durable").
* ``moby-mqtt5``: the backend's own connection (``moby.mqtt``: asyncio
  protocol + the Rust ``mqtt5`` codec), same loop choice as gmqtt. Packet ids
  are collected as messages arrive and PUBACKed in one write per event-loop
  turn (``loop.call_soon`` flush scheduled by the first id of a group), which
  stands in for the backend's group commit without the disk. It connects with
  Receive Maximum 1000, the backend default (``mqtt_receive_maximum``), not
  65535, and runs the backend's PINGREQ keep-alive task. Its handler gets no
  DUP flag, CONNACK properties or SUBACK codes (``subscribe`` only raises on a
  refusal), so dup/connack/granted_qos stay empty for it.

Gotcha handled here: ``mosquitto_pub -l`` at QoS > 0 stops early and silently
(exit 0) when fed more than 65535 lines. It disconnects when the PUBACK for the
mid of its *last* line arrives, and packet ids wrap at 65535, so an earlier
message with the same mid ends the run. N is therefore published as consecutive
``mosquitto_pub`` runs of at most ``--chunk`` (<= 65535) lines each.

Example::

    .venv/bin/python bench/mqtt_clients.py -n 200000
    .venv/bin/python bench/mqtt_clients.py -n 100000 --repeat 3 --json > out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

MOSQUITTO: Final = "/usr/sbin/mosquitto"
MOSQUITTO_PUB: Final = "/usr/bin/mosquitto_pub"
HOST: Final = "127.0.0.1"
SUB_TOPIC: Final = "bench/#"
PUB_TOPIC: Final = "bench/x"
CEILING_TOPIC: Final = "ceiling/x"  # matches no subscription
SESSION_EXPIRY_S: Final = 3600
RECEIVE_MAXIMUM: Final = 65535
MAX_CHUNK: Final = 65535  # mosquitto_pub -l loses messages beyond this (mid wrap)

CLIENTS: Final[dict[str, str]] = {
    "paho": "paho-mqtt loop_start thread, v5, sync on_message (PUBACK after callback)",
    "gmqtt-optimistic": "gmqtt v5, optimistic_acknowledgement=True, sync on_message",
    "gmqtt-ack-after": "gmqtt v5, optimistic_acknowledgement=False, async on_message -> 0",
    "moby-mqtt5": "moby.mqtt (mqtt5 codec), PUBACKs grouped per loop turn, Receive Maximum 1000",
}
MOBY_RECEIVE_MAXIMUM: Final = 1000  # moby.config mqtt_receive_maximum default

BROKER_CONF: Final = """\
listener {port} {host}
allow_anonymous true
persistence false
# 0 = unlimited for all three (mosquitto.conf(5), 2.0.11). For MQTT v5 clients
# the per-client outbound in-flight window is the client's CONNECT Receive
# Maximum instead of max_inflight_messages.
max_queued_messages 0
max_inflight_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Subscriber side (runs in a child process)
# --------------------------------------------------------------------------- #


class SeqTracker:
    """Optional exact check (--verify): distinct seqs, duplicates, reordering."""

    def __init__(self, n: int) -> None:
        self.seen = bytearray(n)
        self.distinct = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.bad = 0
        self._prev = -1

    def add(self, payload: bytes | bytearray) -> None:
        i = payload.find(b'"seq":')
        j = payload.find(b",", i)
        try:
            seq = int(payload[i + 6 : j])
        except ValueError:
            self.bad += 1
            return
        if not 0 <= seq < len(self.seen):
            self.bad += 1
            return
        if self.seen[seq]:
            self.duplicates += 1
        else:
            self.seen[seq] = 1
            self.distinct += 1
        if seq < self._prev:
            self.out_of_order += 1
        self._prev = seq


@dataclass
class Counter:
    target: int
    count: int = 0
    dup_flag: int = 0
    first: float = 0.0
    last: float = 0.0


@dataclass
class ChildResult:
    client: str
    received: int = 0
    first_recv: float | None = None  # time.monotonic(), comparable across processes
    last_recv: float | None = None
    dup_flag: int = 0
    stopped_by: str = ""
    loop: str = ""
    session_present: bool | None = None
    granted_qos: list[int] = field(default_factory=list)
    connack: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, int] | None = None
    error: str | None = None


class StopFlag:
    """Set by SIGTERM/SIGINT in the child so it still reports a partial result."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class Watchdog:
    """Decides when a subscriber should stop waiting."""

    def __init__(self, counter: Counter, timeout_s: float, idle_s: float) -> None:
        self.counter = counter
        self.deadline = time.monotonic() + timeout_s
        self.idle_s = idle_s
        self._seen = -1
        self._changed = time.monotonic()

    def reason(self, stop: StopFlag) -> str | None:
        now = time.monotonic()
        if self.counter.count >= self.counter.target:
            return "complete"
        if stop.event.is_set():
            return "signal"
        if now > self.deadline:
            return "timeout"
        if self.counter.count != self._seen:
            self._seen = self.counter.count
            self._changed = now
        elif self.counter.count > 0 and now - self._changed > self.idle_s:
            return "idle"
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def wait_for_go(args: argparse.Namespace, stop: StopFlag) -> None:
    """Backlog mode: report 'parked', then block until the orchestrator says go."""
    Path(args.ready).touch()
    deadline = time.monotonic() + args.timeout
    go = Path(args.go)
    while not go.exists():
        if stop.event.is_set() or time.monotonic() > deadline:
            raise RuntimeError("no go signal from orchestrator")
        time.sleep(0.005)


def run_paho(args: argparse.Namespace, res: ChildResult, stop: StopFlag) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.subscribeoptions import SubscribeOptions

    counter = Counter(args.count)
    tracker = SeqTracker(args.count) if args.verify else None
    done = threading.Event()
    res.loop = "paho loop_start thread"

    # Hot path: keep it to a handful of attribute stores. paho sends the
    # PUBACK right after this returns (no manual_ack).
    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        n = counter.count + 1
        counter.count = n
        if n == 1:
            counter.first = now
        counter.last = now
        if msg.dup:
            counter.dup_flag += 1
        if tracker is not None:
            tracker.add(msg.payload)
        if n >= counter.target:
            done.set()

    def start_client(subscribe: bool) -> mqtt.Client:
        ready = threading.Event()
        failure: list[str] = []
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=mqtt.MQTTv5,
        )

        def on_connect(
            c: mqtt.Client,
            userdata: Any,
            flags: mqtt.ConnectFlags,
            reason_code: ReasonCode,
            properties: Properties | None,
        ) -> None:
            res.session_present = bool(flags.session_present)
            if properties is not None:
                res.connack = _jsonable(properties.json())  # type: ignore[no-untyped-call]
            if reason_code.is_failure:
                failure.append(f"CONNACK {reason_code}")
                ready.set()
            elif subscribe:
                c.subscribe(SUB_TOPIC, options=SubscribeOptions(qos=1))
            else:
                ready.set()

        def on_subscribe(
            c: mqtt.Client,
            userdata: Any,
            mid: int,
            reason_codes: list[ReasonCode],
            properties: Properties | None,
        ) -> None:
            res.granted_qos = [rc.value for rc in reason_codes]
            ready.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        # clean_start must be passed explicitly: paho's default is
        # MQTT_CLEAN_START_FIRST_ONLY, i.e. a clean session on the first connect.
        client.connect(HOST, args.port, keepalive=60, clean_start=False, properties=props)
        client.loop_start()
        if not ready.wait(15) or failure:
            client.loop_stop()
            raise RuntimeError(failure[0] if failure else "no CONNACK/SUBACK within 15 s")
        return client

    client: mqtt.Client | None = None
    try:
        if args.backlog:
            parked = start_client(subscribe=True)
            parked.disconnect()  # session (and subscription) stay on the broker
            parked.loop_stop()
            wait_for_go(args, stop)
            client = start_client(subscribe=False)
        else:
            client = start_client(subscribe=True)
            Path(args.ready).touch()

        watchdog = Watchdog(counter, args.timeout, args.idle_timeout)
        while True:
            done.wait(0.2)
            reason = watchdog.reason(stop)
            if reason is not None:
                res.stopped_by = reason
                break
        time.sleep(0.3)  # let the last PUBACKs leave before disconnecting
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        client.disconnect(properties=props)
    finally:
        if client is not None:
            client.loop_stop()
        res.received = counter.count
        res.dup_flag = counter.dup_flag
        if counter.count:
            res.first_recv, res.last_recv = counter.first, counter.last
        if tracker is not None:
            res.verify = _tracker_summary(tracker)


def _tracker_summary(tracker: SeqTracker) -> dict[str, int]:
    return {
        "distinct": tracker.distinct,
        "duplicates": tracker.duplicates,
        "out_of_order": tracker.out_of_order,
        "unparseable": tracker.bad,
    }


async def run_gmqtt(args: argparse.Namespace, res: ChildResult, stop: StopFlag, *, optimistic: bool) -> None:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    res.loop = f"{type(loop).__module__}.{type(loop).__qualname__}"
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.event.set)

    counter = Counter(args.count)
    tracker = SeqTracker(args.count) if args.verify else None
    done = asyncio.Event()

    def count(payload: bytes, properties: dict[str, Any]) -> None:
        now = time.monotonic()
        n = counter.count + 1
        counter.count = n
        if n == 1:
            counter.first = now
        counter.last = now
        if properties.get("dup"):
            counter.dup_flag += 1
        if tracker is not None:
            tracker.add(payload)
        if n >= counter.target:
            done.set()

    # Optimistic mode: gmqtt writes the PUBACK *before* calling this.
    def on_message_sync(c: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        count(payload, properties)
        return 0

    # Ack-after mode: gmqtt wraps this in a Task and PUBACKs from its done-
    # callback, with the returned value as reason code. It must return a valid
    # PubRecReasonCode (0): None raises inside the done-callback and the PUBACK
    # is never sent.
    async def on_message_async(
        c: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        count(payload, properties)
        return 0

    async def start_client(subscribe: bool) -> Any:
        subscribed = asyncio.Event()
        # gmqtt 0.8.0 spelling: clean_session=False is the v5 Clean Start flag;
        # any other kwarg is sent as a CONNECT property of that name.
        client = gmqtt.Client(
            args.client_id,
            clean_session=False,
            optimistic_acknowledgement=optimistic,
            session_expiry_interval=SESSION_EXPIRY_S,
            receive_maximum=RECEIVE_MAXIMUM,
        )
        client.set_config({"reconnect_retries": 0})

        def on_connect(c: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
            res.session_present = bool(flags)
            # The `properties` argument is {**CONNACK, **our CONNECT} props (ours
            # win), so read what the broker actually sent from the handler.
            res.connack = _jsonable(c._package_handler._connack_properties)

        def on_subscribe(c: Any, mid: int, qos: tuple[int, ...], properties: Any) -> None:
            res.granted_qos = list(qos)
            subscribed.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        # optimistic_acknowledgement=False with a *sync* on_message never acks
        # (the ack callback is only attached to coroutines): async is mandatory.
        client.on_message = on_message_sync if optimistic else on_message_async
        await asyncio.wait_for(client.connect(HOST, args.port, keepalive=60, version=MQTTv50), 15)
        if subscribe:
            client.subscribe(SUB_TOPIC, qos=1)
            await asyncio.wait_for(subscribed.wait(), 15)
        return client

    client: Any = None
    try:
        if args.backlog:
            parked = await start_client(subscribe=True)
            await parked.disconnect()  # session (and subscription) stay on the broker
            await asyncio.to_thread(wait_for_go, args, stop)
            client = await start_client(subscribe=False)
        else:
            client = await start_client(subscribe=True)
            await asyncio.to_thread(Path(args.ready).touch)

        watchdog = Watchdog(counter, args.timeout, args.idle_timeout)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)
            reason = watchdog.reason(stop)
            if reason is not None:
                res.stopped_by = reason
                break
        await asyncio.sleep(0.3)  # let pending on_message tasks PUBACK
    finally:
        res.received = counter.count
        res.dup_flag = counter.dup_flag
        if counter.count:
            res.first_recv, res.last_recv = counter.first, counter.last
        if tracker is not None:
            res.verify = _tracker_summary(tracker)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(session_expiry_interval=0), 5)


async def run_moby(args: argparse.Namespace, res: ChildResult, stop: StopFlag) -> None:
    from moby.mqtt import MqttConnection, SessionOptions, keepalive, open_connection, subscribe

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    loop = asyncio.get_running_loop()
    res.loop = f"{type(loop).__module__}.{type(loop).__qualname__}"
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.event.set)

    counter = Counter(args.count)
    tracker = SeqTracker(args.count) if args.verify else None
    done = asyncio.Event()
    options = SessionOptions(
        client_id=args.client_id,
        keepalive_s=60,
        session_expiry_s=SESSION_EXPIRY_S,
        receive_maximum=MOBY_RECEIVE_MAXIMUM,
        clean_start=False,
    )
    # Packet ids waiting for their PUBACK, and the connection they arrived on.
    # The first id of a group schedules one flush for the next loop turn, so
    # every id read in this turn (one or more data_received calls) leaves in a
    # single write: the backend's group commit, minus the disk.
    pending: list[int] = []
    pending_conn: list[MqttConnection] = []

    def flush() -> None:
        ids = pending.copy()
        pending.clear()
        pending_conn.pop().ack(ids)

    def on_publish(conn: MqttConnection, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        now = time.monotonic()
        n = counter.count + 1
        counter.count = n
        if n == 1:
            counter.first = now
        counter.last = now
        if tracker is not None:
            tracker.add(payload)
        if qos:
            if not pending:
                pending_conn.append(conn)
                loop.call_soon(flush)
            pending.append(packet_id)
        if n >= counter.target:
            done.set()

    async def start_client(sub: bool) -> MqttConnection:
        conn, session_present = await open_connection(HOST, args.port, options, on_publish, timeout_s=15)
        res.session_present = session_present
        if sub:
            try:
                await subscribe(conn, [SUB_TOPIC], qos=1, timeout_s=15)
            except BaseException:
                conn.abort()
                raise
        return conn

    conn: MqttConnection | None = None
    pinger: asyncio.Task[None] | None = None
    try:
        if args.backlog:
            parked = await start_client(sub=True)
            await parked.disconnect()  # session (and subscription) stay on the broker
            await asyncio.to_thread(wait_for_go, args, stop)
            conn = await start_client(sub=False)
        else:
            conn = await start_client(sub=True)
            await asyncio.to_thread(Path(args.ready).touch)
        pinger = asyncio.create_task(keepalive(conn, options.keepalive_s))

        watchdog = Watchdog(counter, args.timeout, args.idle_timeout)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)
            reason = watchdog.reason(stop)
            if reason is not None:
                res.stopped_by = reason
                break
            if conn.closed.done():
                res.stopped_by = "connection lost"
                break
        await asyncio.sleep(0.3)  # let the last PUBACK flush leave
    finally:
        res.received = counter.count
        if counter.count:
            res.first_recv, res.last_recv = counter.first, counter.last
        if tracker is not None:
            res.verify = _tracker_summary(tracker)
        if pinger is not None:
            pinger.cancel()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(), 5)
            conn.abort()


def child_main(args: argparse.Namespace) -> int:
    res = ChildResult(client=args.child)
    stop = StopFlag()
    stop.install()
    try:
        if args.child == "paho":
            run_paho(args, res, stop)
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] | None = None
            if args.loop == "uvloop":
                try:
                    import uvloop

                    factory = uvloop.new_event_loop
                except ImportError:
                    log("uvloop not importable, falling back to asyncio")
            with asyncio.Runner(loop_factory=factory) as runner:
                if args.child == "moby-mqtt5":
                    runner.run(run_moby(args, res, stop))
                else:
                    optimistic = args.child == "gmqtt-optimistic"
                    runner.run(run_gmqtt(args, res, stop, optimistic=optimistic))
    except BaseException as exc:  # report anything, including KeyboardInterrupt
        res.error = f"{type(exc).__name__}: {exc}"
    tmp = Path(args.result + ".tmp")
    tmp.write_text(json.dumps(asdict(res)))
    tmp.replace(args.result)
    return 0 if res.error is None else 1


# --------------------------------------------------------------------------- #
# Orchestrator side
# --------------------------------------------------------------------------- #


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def kill_proc(proc: subprocess.Popen[bytes] | None, grace_s: float = 3.0) -> None:
    """Terminate one process we started (by its own pid), then SIGKILL if needed."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class Broker:
    """A private mosquitto on a free loopback port; always stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def __enter__(self) -> Broker:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            conf = self.workdir / "mosquitto.conf"
            conf.write_text(BROKER_CONF.format(port=self.port, host=HOST))
            with self.log_path.open("ab") as logf:
                self.proc = subprocess.Popen(
                    [MOSQUITTO, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((HOST, self.port), timeout=0.2),
                ):
                    return
                time.sleep(0.05)
            last_error = tail(self.log_path)
            self.stop()
        raise RuntimeError(f"mosquitto did not start:\n{last_error}")

    def stop(self) -> None:
        kill_proc(self.proc)
        self.proc = None


@dataclass
class PubResult:
    sent: int
    wall_s: float
    start: float
    end: float
    ok: bool
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0


def write_payload_chunks(workdir: Path, n: int, chunk: int) -> list[tuple[Path, int]]:
    """Write N ~115-byte telemetry lines, split into files of <= chunk lines."""
    chunks: list[tuple[Path, int]] = []
    ts0 = 1764139251123
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        path = workdir / f"payload-{start:08d}.jsonl"
        with path.open("w") as f:
            for seq in range(start, stop):
                f.write(
                    '{"schema":"moby.telemetry.v1","sensor_type":"vibration",'
                    f'"ts":{ts0 + seq},"seq":{seq},"values":{{"rms_velocity":2.31}}}}\n'
                )
        chunks.append((path, stop - start))
    return chunks


def publish(
    port: int,
    topic: str,
    chunks: Sequence[tuple[Path, int]],
    deadline: float,
    log_path: Path,
    max_inflight: int | None,
) -> PubResult:
    """Run mosquitto_pub -l -q 1 once per chunk, back to back."""
    start = time.monotonic()
    sent = 0
    error: str | None = None
    for path, lines in chunks:
        cmd = [MOSQUITTO_PUB, "-h", HOST, "-p", str(port), "-l", "-q", "1", "-t", topic]
        if max_inflight is not None:
            cmd += ["-M", str(max_inflight)]
        proc: subprocess.Popen[bytes] | None = None
        try:
            with path.open("rb") as stdin, log_path.open("ab") as logf:
                proc = subprocess.Popen(cmd, stdin=stdin, stdout=logf, stderr=subprocess.STDOUT)
                rc = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            error = "mosquitto_pub timed out"
            break
        finally:
            kill_proc(proc)
        if rc != 0:
            error = f"mosquitto_pub exited {rc}"
            break
        sent += lines
    end = time.monotonic()
    return PubResult(sent=sent, wall_s=end - start, start=start, end=end, ok=error is None, error=error)


@dataclass
class RunResult:
    client: str
    mode: str  # live | backlog | ceiling
    repeat: int
    n: int
    published: int = 0
    received: int = 0
    lost: int = 0
    rate: float | None = None  # subscriber, first -> last message
    e2e_rate: float | None = None  # publisher start -> last message received
    span_s: float | None = None
    pub_rate: float | None = None  # publisher rate while this subscriber was attached
    pub_wall_s: float | None = None
    # live: last receive - publisher end (backlog left once the publisher is done)
    # backlog: last receive - go signal (reconnect + drain of the whole backlog)
    drain_s: float | None = None
    dup_flag: int = 0
    stopped_by: str = ""
    loop: str = ""
    session_present: bool | None = None
    granted_qos: list[int] = field(default_factory=list)
    connack: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, int] | None = None
    error: str | None = None


def run_ceiling(
    args: argparse.Namespace, workdir: Path, chunks: list[tuple[Path, int]], rep: int
) -> RunResult:
    res = RunResult(client="publisher-alone", mode="ceiling", repeat=rep, n=args.n)
    with Broker(workdir) as broker:
        pub = publish(
            broker.port,
            CEILING_TOPIC,
            chunks,
            time.monotonic() + args.timeout,
            workdir / "pub.log",
            args.pub_max_inflight,
        )
    res.published = pub.sent
    res.pub_wall_s = pub.wall_s
    res.pub_rate = res.rate = pub.rate
    res.error = pub.error
    if pub.error:
        log(f"  publisher-alone failed: {pub.error}\n{tail(workdir / 'pub.log')}")
    return res


def run_client(
    args: argparse.Namespace,
    name: str,
    mode: str,
    workdir: Path,
    chunks: list[tuple[Path, int]],
    rep: int,
) -> RunResult:
    """live: subscriber online while publishing. backlog: subscriber parks its
    persistent session, N messages are queued by the broker, then it reconnects
    (clean start off) and drains them."""
    res = RunResult(client=name, mode=mode, repeat=rep, n=args.n)
    deadline = time.monotonic() + args.timeout
    ready = workdir / "ready"
    go = workdir / "go"
    go_time: float | None = None
    result_path = workdir / "result.json"
    child_log = workdir / "child.log"
    child: subprocess.Popen[bytes] | None = None
    pub: PubResult | None = None
    with Broker(workdir) as broker:
        try:
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child", name,
                "--port", str(broker.port),
                "-n", str(args.n),
                "--client-id", f"moby-bench-{name}",
                "--ready", str(ready),
                "--result", str(result_path),
                "--timeout", str(max(5.0, args.timeout - 5)),
                "--idle-timeout", str(args.idle_timeout),
                "--loop", args.loop,
            ]  # fmt: skip
            if args.verify:
                cmd.append("--verify")
            if mode == "backlog":
                cmd += ["--backlog", "--go", str(go)]
            with child_log.open("ab") as logf:
                child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
            ready_deadline = min(deadline, time.monotonic() + 30)
            while not ready.exists():
                if child.poll() is not None or time.monotonic() > ready_deadline:
                    break
                time.sleep(0.02)
            if ready.exists():
                pub = publish(
                    broker.port,
                    PUB_TOPIC,
                    chunks,
                    deadline,
                    workdir / "pub.log",
                    args.pub_max_inflight,
                )
                res.published = pub.sent
                res.pub_wall_s = pub.wall_s
                res.pub_rate = pub.rate
                if pub.error:
                    res.error = pub.error
                if mode == "backlog":
                    go_time = time.monotonic()
                    go.touch()
                try:
                    child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log(f"  {name}/{mode}: run timeout ({args.timeout:.0f}s), stopping subscriber")
            else:
                res.error = "subscriber never became ready"
        finally:
            kill_proc(child, grace_s=5.0)

    if result_path.exists():
        cres = json.loads(result_path.read_text())
        res.received = cres["received"]
        res.dup_flag = cres["dup_flag"]
        res.stopped_by = cres["stopped_by"]
        res.loop = cres["loop"]
        res.session_present = cres["session_present"]
        res.granted_qos = cres["granted_qos"]
        res.connack = cres["connack"]
        res.verify = cres["verify"]
        res.error = res.error or cres["error"]
        if not res.error and res.stopped_by != "complete":
            res.error = f"subscriber stopped early ({res.stopped_by})"
        first, last = cres["first_recv"], cres["last_recv"]
        if first is not None and last is not None and res.received > 1 and last > first:
            res.span_s = last - first
            res.rate = (res.received - 1) / res.span_s
            if go_time is not None:
                res.drain_s = last - go_time
                res.e2e_rate = res.received / res.drain_s
            elif pub is not None:
                res.drain_s = last - pub.end
                res.e2e_rate = res.received / (last - pub.start)
    else:
        res.error = res.error or "subscriber wrote no result"
    res.lost = max(0, res.published - res.received)
    if res.verify is not None:
        res.lost = max(0, res.published - res.verify["distinct"])
    if res.error or res.lost:
        log(f"  {name}/{mode}: error={res.error} lost={res.lost}\n  child log:\n{tail(child_log)}")
        log(f"  broker log:\n{tail(workdir / 'mosquitto.log')}")
    return res


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[RunResult], order: list[tuple[str, str]]) -> list[dict[str, Any]]:
    ceiling = median([r.rate for r in runs if r.mode == "ceiling"])
    rows: list[dict[str, Any]] = []
    for name, mode in order:
        rs = [r for r in runs if r.client == name and r.mode == mode]
        if not rs:
            continue
        rate = median([r.rate for r in rs])
        rates = [r.rate for r in rs if r.rate is not None]
        rows.append(
            {
                "client": name,
                "mode": mode,
                "runs": len(rs),
                "msgs_per_s": rate,
                "msgs_per_s_min": min(rates) if rates else None,
                "msgs_per_s_max": max(rates) if rates else None,
                "ratio_vs_ceiling": rate / ceiling if rate and ceiling else None,
                "lost_total": sum(r.lost for r in rs),
                "e2e_msgs_per_s": median([r.e2e_rate for r in rs]),
                "pub_msgs_per_s": median([r.pub_rate for r in rs]),
                "drain_s": median([r.drain_s for r in rs]),
                "errors": [r.error for r in rs if r.error],
            }
        )
    return rows


TABLE_LEGEND: Final = """\
msgs/s     subscriber rate, first -> last received message (median over repeats)
vs ceiling msgs/s / publisher-alone msgs/s
loss       published - received (distinct seqs with --verify); ERR = a run reported an error
e2e msgs/s live: N / (publisher start -> last receive); backlog: N / (go -> last receive)
pub msgs/s mosquitto_pub rate during that run
drain s    live: last receive - publisher exit; backlog: go -> last receive (incl. connect)"""


def format_table(rows: list[dict[str, Any]]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    header = (
        "client",
        "mode",
        "msgs/s",
        "vs ceiling",
        "loss",
        "e2e msgs/s",
        "pub msgs/s",
        "drain s",
    )
    body = [
        (
            r["client"],
            r["mode"],
            num(r["msgs_per_s"], ",.0f"),
            num(r["ratio_vs_ceiling"], ".2f"),
            str(r["lost_total"]) + (" ERR" if r["errors"] else ""),
            num(r["e2e_msgs_per_s"], ",.0f"),
            num(r["pub_msgs_per_s"], ",.0f"),
            num(r["drain_s"], ".2f"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = [
        " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *body)
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("paho-mqtt", "gmqtt", "mqtt5", "uvloop"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    try:
        banner = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5).stdout
        out["mosquitto"] = banner.splitlines()[0] if banner else "?"
    except (OSError, subprocess.TimeoutExpired):
        out["mosquitto"] = "?"
    return out


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so finally-blocks stop our brokers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def orchestrate(args: argparse.Namespace) -> int:
    for binary in (MOSQUITTO, MOSQUITTO_PUB):
        if not os.access(binary, os.X_OK):
            log(f"missing {binary}")
            return 2
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        log(f"unknown client(s) {unknown}; choose from {list(CLIENTS)}")
        return 2
    if not 1 <= args.chunk <= MAX_CHUNK:
        log(f"--chunk must be 1..{MAX_CHUNK} (mosquitto_pub -l loses messages beyond that)")
        return 2

    modes = ["live", "backlog"] if args.mode == "both" else [args.mode]
    order = [("publisher-alone", "ceiling"), *((c, m) for m in modes for c in clients)]
    runs: list[RunResult] = []
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="moby-mqtt-bench-") as tmp:
        root = Path(tmp)
        chunks = write_payload_chunks(root, args.n, args.chunk)
        line_bytes = chunks[0][0].stat().st_size / chunks[0][1]
        log(f"payload: {args.n} lines in {len(chunks)} chunk(s), {line_bytes:.0f} B/line")
        for rep in range(args.repeat):
            workdir = root / f"r{rep}-publisher-alone"
            log(f"[{rep + 1}/{args.repeat}] publisher-alone ...")
            runs.append(run_ceiling(args, workdir, chunks, rep))
            log(f"  {runs[-1].rate or 0:,.0f} msgs/s")
            for name, mode in order[1:]:
                log(f"[{rep + 1}/{args.repeat}] {name} {mode} ...")
                run = run_client(args, name, mode, root / f"r{rep}-{name}-{mode}", chunks, rep)
                runs.append(run)
                log(
                    f"  {run.rate or 0:,.0f} msgs/s, received {run.received}/{run.published},"
                    f" stopped_by={run.stopped_by}"
                )

    rows = summarize(runs, order)
    info = versions()
    title = (
        f"QoS 1 receive+ack, N={args.n}, repeat={args.repeat} (median), "
        f"publisher=mosquitto_pub -l -q 1 x{len(chunks)} chunk(s), asyncio clients' loop={args.loop}, {info}"
    )
    table = format_table(rows)
    if args.json:
        log(title)
        log(table)
        log(TABLE_LEGEND)
        doc = {
            "config": {k: v for k, v in vars(args).items() if k not in INTERNAL_ARGS},
            "versions": info,
            "summary": rows,
            "runs": [asdict(r) for r in runs],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(title)
        print(table)
        print(TABLE_LEGEND)
    failed = any(r["errors"] or r["lost_total"] for r in rows)
    return 1 if failed else 0


INTERNAL_ARGS: Final = frozenset({"child", "port", "client_id", "ready", "result", "go", "backlog", "count"})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="QoS 1 receive+ack throughput of Python MQTT subscribers (private mosquitto).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-n", type=int, default=200_000, help="messages per run")
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma list of {list(CLIENTS)}")
    p.add_argument(
        "--mode",
        choices=("live", "backlog", "both"),
        default="both",
        help="live: subscriber online while publishing; backlog: N queued in the persistent "
        "session, then the subscriber reconnects and drains",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    p.add_argument("--timeout", type=float, default=120.0, help="per-run timeout, seconds")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="subscriber gives up after this long without messages",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=50_000,
        help=f"lines per mosquitto_pub process (<= {MAX_CHUNK})",
    )
    p.add_argument(
        "--pub-max-inflight", type=int, default=None, help="mosquitto_pub -M (default: its own, 20)"
    )
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop for the gmqtt and moby-mqtt5 clients",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="parse seq in every message to detect loss/dups exactly (adds per-message cost)",
    )
    p.add_argument(
        "--json", action="store_true", help="write results as JSON to stdout (table goes to stderr)"
    )
    # Internal: subscriber child process.
    p.add_argument("--child", choices=tuple(CLIENTS), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--client-id", help=argparse.SUPPRESS)
    p.add_argument("--ready", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--go", help=argparse.SUPPRESS)
    p.add_argument("--backlog", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.count = args.n
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
