"""``driver = "waveform"``: raw accelerometer samples → vibration features and the ISO 10816 zone.

A DAQ (or its vendor tool) delivers raw samples — ``int16`` counts or ``float32`` — at
``sample_rate_hz`` through a named pipe (``source = "fifo"``), UDP datagrams (``"udp"``) or a
program's stdout (``"command"``). ``sensitivity`` turns a raw sample into acceleration (in m/s² or
g per raw unit). Every ``window_s`` of samples becomes one reading of the features in
:mod:`moby.edge.features` (RMS velocity over the ISO band, band velocities, peak, crest factor,
kurtosis, the zone for ``machine_class``), stamped when the window's first bytes arrived.
Windows follow each other without gaps or overlap; ``interval_s`` is not used.

Faults: ``waveform_unreachable`` (the pipe, socket or program cannot be opened or ended),
``waveform_stalled`` (no samples for two windows), ``waveform_framing`` (a datagram that is not
whole samples), ``waveform_invalid`` (a window with NaN/∞), ``waveform_overflow`` (UDP
datagrams arriving faster than they are processed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator, Field, model_validator

from moby.edge.devices.base import DeviceFault, DeviceRefused, DeviceStatus, Sample, now_ms
from moby.edge.devices.command import resolve
from moby.edge.devices.sensor import DeviceSensor
from moby.edge.features import (
    ISO_BAND_HZ,
    MIN_CYCLES_AT_BAND_LOW,
    STANDARD_GRAVITY,
    UNITS,
    MachineClass,
    vibration_features,
)
from moby.net import Backoff

RECONNECT_MAX_S = 5.0
CHUNK = 65536
UDP_QUEUE = 1024  # datagrams waiting to be processed


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("should be HOST:PORT, e.g. 127.0.0.1:9999")
    return text


class WaveformSensor(DeviceSensor):
    driver: Literal["waveform"]
    type: Literal["vibration"] = "vibration"
    source: Literal["fifo", "udp", "command"]
    path: Path | None = None  # fifo: created (0600) when missing
    listen: Annotated[str, AfterValidator(_host_port)] | None = None  # udp: 127.0.0.1:9999
    command: (
        Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=64)] | None
    ) = None
    sample_format: Literal["int16", "float32"] = "int16"
    byte_order: Literal["little", "big"] = "little"
    sample_rate_hz: Annotated[float, Field(gt=0, le=1_000_000)]
    sensitivity: Annotated[float, Field(gt=0)]  # acceleration per raw unit, in sensitivity_units
    sensitivity_units: Literal["m/s2", "g"] = "m/s2"
    window_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    machine_class: MachineClass = MachineClass.CLASS_II
    band_hz: tuple[float, float] = ISO_BAND_HZ  # ISO 10816-3: 2-1000 Hz below 600 r/min

    @model_validator(mode="after")
    def _consistent(self) -> WaveformSensor:
        needed = {"fifo": "path", "udp": "listen", "command": "command"}[self.source]
        for key in ("path", "listen", "command"):
            given = getattr(self, key) is not None
            if key == needed and not given:
                raise ValueError(f'source = "{self.source}" needs {key}')
            if key != needed and given:
                raise ValueError(f'{key} is not used with source = "{self.source}"')
        lo, hi = self.band_hz
        if not 0 < lo < hi <= self.sample_rate_hz / 2:
            raise ValueError(
                f"band_hz {list(self.band_hz)} must lie below half the sample rate "
                f"({self.sample_rate_hz / 2:g} Hz)"
            )
        if self.window_s * lo < MIN_CYCLES_AT_BAND_LOW:
            raise ValueError(f"window_s must hold {MIN_CYCLES_AT_BAND_LOW:g} cycles of {lo:g} Hz")
        return self

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(
            ("<" if self.byte_order == "little" else ">") + ("i2" if self.sample_format == "int16" else "f4")
        )


class Windows:
    """Raw bytes in, whole windows of acceleration (m/s²) out; a partial sample waits for its rest."""

    def __init__(self, cfg: WaveformSensor) -> None:
        self.dtype = cfg.dtype
        self.size = max(2, round(cfg.sample_rate_hz * cfg.window_s))
        gain = cfg.sensitivity * (STANDARD_GRAVITY if cfg.sensitivity_units == "g" else 1.0)
        self.gain = gain
        self._window = np.empty(self.size, dtype=np.float64)
        self._filled = 0
        self._partial = b""
        self.started_ms: int | None = None

    def feed(self, data: bytes, arrived_ms: int) -> list[tuple[int, npt.NDArray[np.float64]]]:
        data = self._partial + data
        whole = len(data) - len(data) % self.dtype.itemsize
        self._partial = data[whole:]
        samples = np.frombuffer(data[:whole], dtype=self.dtype)
        done: list[tuple[int, npt.NDArray[np.float64]]] = []
        at = 0
        while at < samples.size:
            if self._filled == 0:
                self.started_ms = arrived_ms
            take = min(self.size - self._filled, samples.size - at)
            self._window[self._filled : self._filled + take] = samples[at : at + take]
            self._filled += take
            at += take
            if self._filled == self.size:
                assert self.started_ms is not None
                done.append((self.started_ms, self._window * self.gain))
                self._filled = 0
        return done


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, status: DeviceStatus, itemsize: int) -> None:
        self.status = status
        self.itemsize = itemsize
        self.queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(UDP_QUEUE)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) % self.itemsize:
            self.status.soft_fault(
                "framing", f"a datagram of {len(data)} bytes is not whole samples; dropped"
            )
            return
        try:
            self.queue.put_nowait((data, now_ms()))
        except asyncio.QueueFull:
            self.status.soft_fault("overflow", "datagrams arrive faster than they are processed; dropped")


class WaveformDriver:
    driver = "waveform"

    def __init__(self, cfg: WaveformSensor) -> None:
        self.cfg = cfg
        self.sensor_type = cfg.type
        self.units: Mapping[str, str] = UNITS
        self.status = DeviceStatus("waveform", cfg.sensor_id)

    @property
    def errors(self) -> Mapping[str, int]:
        return self.status.errors

    # -- sources: chunks of raw bytes and when they arrived --------------------------------------
    def _fifo_path(self) -> Path:
        """The FIFO, created (0600) when missing; DeviceRefused when the path is something else."""
        path = self.cfg.path
        assert path is not None
        if not path.exists():
            try:
                os.mkfifo(path, 0o600)
            except OSError as exc:
                raise DeviceRefused(
                    "unreachable", f"cannot create the FIFO: {exc.strerror}", key="path", value=str(path)
                ) from None
        elif not stat.S_ISFIFO(path.stat().st_mode):
            raise DeviceRefused(
                "unreachable", "exists and is not a FIFO (mkfifo)", key="path", value=str(path)
            )
        return path

    def _fifo_fd(self) -> int:
        path = self._fifo_path()
        # Read-write: the agent holds a writer end itself, so a writer that goes away is not an
        # end of file, and the next writer simply continues the stream.
        try:
            return os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise DeviceRefused(
                "unreachable", f"cannot open it: {exc.strerror}", key="path", value=str(path)
            ) from None

    async def _fifo(self) -> AsyncGenerator[tuple[bytes, int]]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=CHUNK)
        fd = self._fifo_fd()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while chunk := await reader.read(CHUNK):
                yield chunk, now_ms()
        finally:
            transport.close()

    async def _udp(self) -> AsyncGenerator[tuple[bytes, int]]:
        assert self.cfg.listen is not None
        host, _, port = self.cfg.listen.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self.status, self.cfg.dtype.itemsize),
                local_addr=(host.strip("[]"), int(port)),
            )
        except OSError as exc:
            raise DeviceRefused(
                "unreachable", f"cannot listen: {exc.strerror}", key="listen", value=self.cfg.listen
            ) from None
        try:
            while True:
                yield await protocol.queue.get()
        finally:
            transport.close()

    async def _command(self) -> AsyncGenerator[tuple[bytes, int]]:
        assert self.cfg.command is not None
        program = resolve(self.cfg.command[0])
        if program is None:
            raise DeviceRefused(
                "unreachable", "no such program, or not executable", key="command", value=self.cfg.command[0]
            )
        proc = await asyncio.create_subprocess_exec(
            program,
            *self.cfg.command[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            while chunk := await proc.stdout.read(CHUNK):
                yield chunk, now_ms()
            code = await proc.wait()
            raise DeviceFault("unreachable", f"the program exited with status {code}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    def _source(self) -> AsyncGenerator[tuple[bytes, int]]:
        return {"fifo": self._fifo, "udp": self._udp, "command": self._command}[self.cfg.source]()

    # -- windows → readings -------------------------------------------------------------------------
    def features(self, accel: npt.NDArray[np.float64]) -> dict[str, float] | None:
        try:
            return vibration_features(
                accel, self.cfg.sample_rate_hz, band_hz=self.cfg.band_hz, machine_class=self.cfg.machine_class
            ).as_values()
        except ValueError as exc:
            self.status.soft_fault("invalid", str(exc))
            return None

    async def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        backoff = Backoff(0.5, RECONNECT_MAX_S)
        stall_s = 2 * self.cfg.window_s + 1
        while True:
            windows = Windows(self.cfg)
            source = self._source()
            # one pending read, kept across stall time-outs (cancelling it would end the source)
            pending = asyncio.ensure_future(_next(source))
            try:
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=stall_s)
                    if not done:
                        self.status.fault(DeviceFault("stalled", f"no samples for {stall_s:g} s"))
                        continue
                    item = pending.result()
                    if item is None:
                        raise DeviceFault("unreachable", f"the {self.cfg.source} source ended")
                    pending = asyncio.ensure_future(_next(source))
                    for started, accel in windows.feed(*item):
                        values = self.features(accel)
                        if values is not None:
                            self.status.ok()
                            backoff.reset()
                            yield Sample(started, values)
            except DeviceFault as fault:
                self.status.fault(fault)
            except OSError as exc:
                self.status.fault(DeviceFault("unreachable", f"{self.cfg.source}: {exc}"))
            finally:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
                await source.aclose()
            await asyncio.sleep(backoff.next())

    async def check(self) -> None:
        """The source is there (no reader is opened: a FIFO's data would be lost when it closes)."""
        if self.cfg.source == "fifo":
            self._fifo_path()
        elif self.cfg.source == "command":
            assert self.cfg.command is not None
            if resolve(self.cfg.command[0]) is None:
                raise DeviceRefused(
                    "unreachable",
                    "no such program, or not executable",
                    key="command",
                    value=self.cfg.command[0],
                )
        else:
            source = self._udp()
            first = asyncio.ensure_future(_next(source))
            try:
                await asyncio.wait({first}, timeout=0.1)
                if first.done() and (exc := first.exception()) is not None:
                    raise exc
            finally:
                first.cancel()
                with contextlib.suppress(BaseException):
                    await first
                await source.aclose()


async def _next(source: AsyncIterator[tuple[bytes, int]]) -> tuple[bytes, int] | None:
    """The next chunk, or None at the end of the source."""
    try:
        return await anext(source)
    except StopAsyncIteration:
        return None
