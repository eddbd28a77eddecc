"""What every device driver shares: the async driver protocol, samples, faults and device state.

A device driver differs from a simulated :class:`moby.edge.drivers.SensorDriver` in two ways:
it talks to a device over a network or a port (so it is async: a slow PLC must not hold up
the other sensors), and it may be *pushed* readings (an OPC UA subscription, lines on a serial
port, a waveform stream) rather than poll for them. So a driver is an async iterator of
:class:`Sample`: it decides when a reading is taken, stamps it at acquisition and carries its
quality. The agent appends each sample to its buffer as it comes.

Faults never end the iterator: a driver counts them in :attr:`DeviceStatus.errors` (the health
report's ``errors.<driver>_<kind>``), logs each change of the device's state once (ok → timeout,
timeout → unreachable, … → ok again, with how long it lasted) and keeps trying, so a device that
comes back resumes without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import structlog

from moby.schema.payloads import Quality

log = structlog.get_logger("moby.edge.devices")

# A per-reading problem (a malformed line, a value of the wrong type) seen again this long after
# it was last logged is logged again, with how many there were in between.
SOFT_FAULT_LOG_EVERY_S = 60.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading as a device delivered it: taken at ``ts_ms`` (epoch ms), with its quality."""

    ts_ms: int
    values: dict[str, float]
    quality: Quality = Quality.GOOD


class DeviceFault(Exception):
    """A device did not deliver a reading; counted in health as ``errors.<driver>_<kind>``.

    ``kind`` is short and stable (``timeout``, ``unreachable``, ``exception``, ``parse``, …);
    ``detail`` is for people. ``key`` names the configuration key the fault is about, when one
    is (``registers.1.address``), so that a fault at start-up reads as a configuration problem.
    """

    def __init__(self, kind: str, detail: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.key = key
        self.value = value


class DeviceRefused(DeviceFault):
    """The device answers but refuses what the configuration asks (an address it does not have,
    a node it does not know, a program that cannot be run): retrying does not help; at start-up
    it is a configuration mistake."""


@runtime_checkable
class DeviceDriver(Protocol):
    """One sensor on a real device, as the edge agent sees it."""

    @property
    def driver(self) -> str:
        """The driver's name (``modbus``, ``opcua``, …): the prefix of its health counters."""
        ...

    @property
    def sensor_type(self) -> str: ...

    @property
    def units(self) -> Mapping[str, str]:
        """Value name → unit, for the status birth message."""
        ...

    @property
    def errors(self) -> Mapping[str, int]:
        """Device fault counters since the start, ``<driver>_<kind>`` → count."""
        ...

    async def check(self) -> None:
        """Reach the device once and take one reading (start-up): raise :class:`DeviceFault`."""
        ...

    def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        """Readings as they are taken, for ever; ``interval_s()`` is the current poll interval
        (the ``set_interval`` command changes it while the iterator runs)."""
        ...


@dataclass
class DeviceStatus:
    """A device's fault counters and state, logged once per change of state."""

    driver: str
    sensor_id: str
    errors: dict[str, int] = field(default_factory=dict)
    state: str = "ok"  # "ok" or the kind of the fault the device is in
    _since: float = field(default_factory=time.monotonic)
    _soft: dict[str, tuple[float, int]] = field(default_factory=dict)  # kind -> (logged at, seen since)

    def count(self, kind: str) -> None:
        key = f"{self.driver}_{kind}"
        self.errors[key] = self.errors.get(key, 0) + 1

    def fault(self, fault: DeviceFault) -> None:
        """The device is failing: counted; logged when it was fine before or failed otherwise."""
        self.count(fault.kind)
        if self.state != fault.kind:
            log.warning(
                "device fault; retrying, quiet until this changes",
                sensor=self.sensor_id,
                driver=self.driver,
                fault=f"{self.driver}_{fault.kind}",
                detail=fault.detail,
                **({"key": fault.key} if fault.key else {}),
            )
            if self.state == "ok":
                self._since = time.monotonic()
            self.state = fault.kind

    def soft_fault(self, kind: str, detail: str) -> None:
        """One reading lost to a problem of its own (a malformed line): counted; logged the first
        time and then at most once a minute, with the number seen in between."""
        self.count(kind)
        now = time.monotonic()
        logged_at, seen = self._soft.get(kind, (-SOFT_FAULT_LOG_EVERY_S, 0))
        if now - logged_at >= SOFT_FAULT_LOG_EVERY_S:
            log.warning(
                "reading dropped",
                sensor=self.sensor_id,
                driver=self.driver,
                fault=f"{self.driver}_{kind}",
                detail=detail[:200],
                **({"since_last_report": seen + 1} if seen else {}),
            )
            self._soft[kind] = (now, 0)
        else:
            self._soft[kind] = (logged_at, seen + 1)

    def ok(self) -> None:
        """The device delivered: logged when it was failing."""
        if self.state != "ok":
            log.info(
                "device answers again",
                sensor=self.sensor_id,
                driver=self.driver,
                after=f"{self.driver}_{self.state}",
                down_s=round(time.monotonic() - self._since, 1),
            )
            self.state = "ok"


async def ticks(interval_s: Callable[[], float]) -> AsyncIterator[float]:
    """Poll times on a fixed schedule (monotonic): yields, then sleeps until the next one.

    A poll that overran (a device timing out) does not cause a burst of catch-up polls: the
    schedule restarts from now, so a slow device is polled at most once per interval.
    """
    next_at = time.monotonic()
    while True:
        yield next_at
        interval = interval_s()
        next_at += interval
        now = time.monotonic()
        if next_at < now:
            next_at = now
        await asyncio.sleep(next_at - now)


def device_errors(driver: object) -> Mapping[str, int]:
    """A driver's device fault counters (none for a simulated driver)."""
    return driver.errors if isinstance(driver, DeviceDriver) else {}
