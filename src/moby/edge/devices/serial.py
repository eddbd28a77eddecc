"""``driver = "serial"``: a device that prints a line per reading on a serial port.

Each line is one reading, stamped when its last byte arrived, parsed as ``key=value`` pairs,
one JSON object or a regular expression with named groups (:mod:`moby.edge.devices.lines`); only
the value names in the sensor's ``values`` table are taken. The device sets the pace:
``interval_s`` is not used. The port is read with pyserial-asyncio-fast (pyserial under asyncio,
no thread per port); a port that vanishes (a USB adapter pulled) is reopened with backoff.

Faults: ``serial_unreachable`` (the port cannot be opened or failed), ``serial_parse`` (a line
that does not parse), ``serial_overlong`` (a line longer than ``max_line_bytes``: discarded up
to the next line break).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from moby.edge.devices.base import DeviceFault, DeviceRefused, DeviceStatus, Sample, now_ms
from moby.edge.devices.lines import LineFormat, LineParser, check_pattern
from moby.edge.devices.sensor import DeviceSensor, ValuesTable
from moby.net import Backoff

RECONNECT_MAX_S = 5.0
PARITIES = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


class LineSensorMixin(DeviceSensor):
    """What the serial and command drivers share: how a line becomes a reading."""

    format: LineFormat = LineFormat.KEY_VALUE
    pattern: Annotated[str, Field(max_length=1024)] | None = None  # format = "regex": named groups
    values: ValuesTable  # value name → unit; only these are taken from a line
    max_line_bytes: Annotated[int, Field(ge=16, le=1024 * 1024)] = 4096

    @model_validator(mode="after")
    def _pattern(self) -> LineSensorMixin:
        if self.format is LineFormat.REGEX:
            if self.pattern is None:
                raise ValueError('format = "regex" needs a pattern with named groups')
            check_pattern(self.pattern, self.values)
        elif self.pattern is not None:
            raise ValueError('pattern is only used with format = "regex"')
        return self

    def parser(self) -> LineParser:
        return LineParser.of(self.format, self.values, self.pattern)


def _stopbits(value: float) -> float:
    if value not in (1, 1.5, 2):
        raise ValueError("should be 1, 1.5 or 2")
    return value


class SerialSensor(LineSensorMixin):
    driver: Literal["serial"]
    port: Path  # /dev/ttyUSB0, /dev/serial/by-id/…
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: Annotated[float, AfterValidator(_stopbits)] = 1


async def read_lines(
    reader: asyncio.StreamReader, max_bytes: int, status: DeviceStatus
) -> AsyncIterator[tuple[bytes, int]]:
    """Lines (without the line break) and when they arrived; an over-long line is discarded up
    to its end and counted as ``<driver>_overlong``. Ends at EOF."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                yield exc.partial, now_ms()
            return
        except asyncio.LimitOverrunError as exc:
            # drop what is buffered, then the rest of the line, keeping memory bounded
            await reader.readexactly(exc.consumed)
            while True:
                try:
                    await reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    await reader.readexactly(more.consumed)
                except asyncio.IncompleteReadError:
                    return
            status.soft_fault("overlong", f"a line longer than max_line_bytes={max_bytes}; discarded")
            continue
        yield line.rstrip(b"\r\n"), now_ms()


def parse_line(parser: LineParser, raw: bytes, ts: int, status: DeviceStatus) -> Sample | None:
    try:
        return Sample(ts, parser.parse(raw.decode("utf-8", errors="replace")))
    except ValueError as exc:
        status.soft_fault("parse", str(exc))
        return None


class SerialDriver:
    driver = "serial"

    def __init__(self, cfg: SerialSensor) -> None:
        self.cfg = cfg
        self.sensor_type = cfg.type
        self.units: Mapping[str, str] = dict(cfg.values)
        self.parser = cfg.parser()
        self.status = DeviceStatus("serial", cfg.sensor_id)

    @property
    def errors(self) -> Mapping[str, int]:
        return self.status.errors

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        import serial
        import serial_asyncio_fast

        port = str(self.cfg.port)
        if not os.path.exists(port):  # noqa: ASYNC240 - a stat of /dev
            raise DeviceRefused("unreachable", f"no such port {port}", key="port", value=port)
        try:
            return await serial_asyncio_fast.open_serial_connection(
                url=port,
                baudrate=self.cfg.baudrate,
                bytesize=self.cfg.bytesize,
                parity=PARITIES[self.cfg.parity],
                stopbits=self.cfg.stopbits,
                limit=self.cfg.max_line_bytes,
            )
        except (OSError, serial.SerialException) as exc:
            raise DeviceFault("unreachable", f"cannot open {port}: {exc}", key="port", value=port) from None

    async def check(self) -> None:
        _, writer = await self._open()
        writer.close()

    async def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        import serial

        backoff = Backoff(0.5, RECONNECT_MAX_S)
        while True:
            writer = None
            try:
                reader, writer = await self._open()
                async for raw, ts in read_lines(reader, self.cfg.max_line_bytes, self.status):
                    sample = parse_line(self.parser, raw, ts, self.status)
                    if sample is not None:
                        self.status.ok()
                        backoff.reset()
                        yield sample
                raise DeviceFault("unreachable", f"{self.cfg.port}: the port closed")
            except DeviceFault as fault:
                self.status.fault(fault)
            except (OSError, serial.SerialException) as exc:
                self.status.fault(DeviceFault("unreachable", f"{self.cfg.port}: {exc}"))
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff.next())
