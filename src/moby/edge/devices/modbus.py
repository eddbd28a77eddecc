"""``driver = "modbus"``: registers and bits of a Modbus TCP or RTU device (pymodbus).

One sensor is one device (a unit id) and a register map: each entry names a value and says
where it lives (table, address), how it is encoded (data type, word and byte order) and how to
scale it (``value = raw * scale + offset``). Neighbouring entries of one table are read in one
request (up to 125 registers or 2,000 bits; ``max_gap`` unused registers may be read across to
merge two blocks). Several sensors on one TCP address or one RS-485 port share one connection —
a serial port can only be opened once, and many TCP devices accept only a few connections —
and pymodbus keeps one request in flight per connection.

Faults (health ``errors``): ``modbus_unreachable`` (no connection; reconnect attempts back off
up to 5 s), ``modbus_timeout`` (no answer within ``timeout_s``), ``modbus_exception`` (the device
answered with a Modbus exception), ``modbus_not_finite`` (a float register holds NaN or ∞:
the value is left out of that reading).
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from moby.edge.devices.base import DeviceFault, DeviceRefused, DeviceStatus, Sample, now_ms, ticks
from moby.edge.devices.sensor import DeviceSensor, Finite, Seconds, Unit, ValueName
from moby.net import Backoff

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    Client = AsyncModbusTcpClient | AsyncModbusSerialClient

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
BIT_TABLES = frozenset({"coil", "discrete"})
WORDS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
    "bool": 1,
}
_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "float64": ">d"}
MAX_REGISTERS_PER_READ = 125  # the Modbus spec's limit for functions 3 and 4
MAX_BITS_PER_READ = 2000  # and for functions 1 and 2
RECONNECT_MAX_S = 5.0
# Modbus exception codes that say "what you asked for does not exist here" (configuration).
REFUSALS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value"}
EXCEPTIONS = {
    **REFUSALS,
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def _url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number 1-65535") from None
        if not parts.hostname or port == 0 or parts.path not in ("", "/"):
            raise ValueError("should be tcp://HOST[:PORT] (port 502 when left out)")
    elif parts.scheme == "rtu":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("should be rtu:///dev/PORT (three slashes: the path of a serial port)")
    else:
        raise ValueError("should be tcp://HOST[:PORT] or rtu:///dev/PORT")
    return url


class ModbusRegister(BaseModel):
    """One value of the register map."""

    model_config = ConfigDict(extra="forbid")

    name: ValueName
    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535)]
    data_type: DataType | None = None  # uint16 for registers, bool for coils and discrete inputs
    word_order: Literal["big", "little"] = "big"  # of a 32/64-bit value: most significant word first
    byte_order: Literal["big", "little"] = "big"  # within each 16-bit register
    scale: Finite = 1.0
    offset: Finite = 0.0
    units: Unit = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModbusRegister:
        bits = self.table in BIT_TABLES
        if self.data_type is None:
            self.data_type = "bool" if bits else "uint16"
        if bits != (self.data_type == "bool"):
            raise ValueError(
                f"data_type {self.data_type!r} does not fit table {self.table!r}: coils and discrete "
                "inputs are bool, holding and input registers int16/uint16/int32/uint32/float32/float64"
            )
        if self.address + self.count - 1 > 65535:
            raise ValueError(f"a {self.data_type} at address {self.address} runs past register 65535")
        return self

    @property
    def count(self) -> int:
        return WORDS[self.data_type or "uint16"]


def _unique_names(registers: list[ModbusRegister]) -> list[ModbusRegister]:
    seen: set[str] = set()
    for r in registers:
        if r.name in seen:
            raise ValueError(f"the value name {r.name!r} is used twice")
        seen.add(r.name)
    return registers


class ModbusSensor(DeviceSensor):
    driver: Literal["modbus"]
    url: Annotated[str, AfterValidator(_url)]  # tcp://10.0.0.5:502 or rtu:///dev/ttyUSB0
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    timeout_s: Seconds = 1.0
    retries: Annotated[int, Field(ge=0, le=5)] = 0
    # RTU only: the serial line (every sensor on one port must agree)
    baudrate: Annotated[int, Field(ge=300, le=4_000_000)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["none", "even", "odd"] = "none"
    stopbits: Literal[1, 2] = 1
    max_gap: Annotated[int, Field(ge=0, le=100)] = 0  # unused registers a read may span
    registers: Annotated[
        list[ModbusRegister], Field(min_length=1, max_length=100), AfterValidator(_unique_names)
    ]


# -- pure parts: the read plan and the decoding -------------------------------------------------
@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers or bits of ``table`` from ``start``."""

    table: Table
    start: int
    count: int
    members: tuple[int, ...]  # indexes into the register map


def plan_blocks(registers: Sequence[ModbusRegister], max_gap: int = 0) -> list[Block]:
    """Group the map into as few reads as the spec's limits allow, in address order per table."""
    blocks: list[Block] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS_PER_READ if table in BIT_TABLES else MAX_REGISTERS_PER_READ
        entries = sorted(
            (r.address, r.address + r.count, i) for i, r in enumerate(registers) if r.table == table
        )
        start = end = -1
        members: list[int] = []
        for lo, hi, i in entries:
            if members and lo - end <= max_gap and max(hi, end) - start <= limit:
                end = max(end, hi)
                members.append(i)
                continue
            if members:
                blocks.append(Block(table, start, end - start, tuple(members)))
            start, end, members = lo, hi, [i]
        if members:
            blocks.append(Block(table, start, end - start, tuple(members)))
    return blocks


def decode(words: Sequence[int], reg: ModbusRegister) -> float:
    """The register(s) of one value as a number, scaled: ``raw * scale + offset``."""
    assert reg.data_type is not None and reg.data_type != "bool"
    ordered = list(words) if reg.word_order == "big" else list(reversed(words))
    raw = b"".join(struct.pack(">H" if reg.byte_order == "big" else "<H", w & 0xFFFF) for w in ordered)
    number = float(struct.unpack(_STRUCT[reg.data_type], raw)[0])
    return number * reg.scale + reg.offset


def values_of(
    block: Block, data: Sequence[int] | Sequence[bool], registers: Sequence[ModbusRegister]
) -> dict[str, float]:
    """Each member's value from one block's answer (words or bits); NaN/∞ raise ValueError."""
    values: dict[str, float] = {}
    for i in block.members:
        reg = registers[i]
        at = reg.address - block.start
        if reg.data_type == "bool":
            values[reg.name] = (1.0 if data[at] else 0.0) * reg.scale + reg.offset
            continue
        value = decode([int(w) for w in data[at : at + reg.count]], reg)
        if not math.isfinite(value):
            raise ValueError(f"{reg.name} (address {reg.address}) holds {value}")
        values[reg.name] = value
    return values


# -- connections shared by the sensors on one address or port -----------------------------------
class _Bus:
    """One Modbus connection (a TCP address or a serial port) and its reconnect backoff."""

    def __init__(self, cfg: ModbusSensor) -> None:
        self.cfg = cfg
        self.url = cfg.url
        self.settings = (cfg.baudrate, cfg.bytesize, cfg.parity, cfg.stopbits, cfg.timeout_s, cfg.retries)
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._backoff = Backoff(0.5, RECONNECT_MAX_S)
        self._retry_at = 0.0
        self._why = ""

    def _make(self) -> Client:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        parts = urlsplit(self.url)
        common: dict[str, Any] = {
            "timeout": self.cfg.timeout_s,
            "retries": self.cfg.retries,
            "reconnect_delay": 0,
        }
        if parts.scheme == "tcp":
            return AsyncModbusTcpClient(parts.hostname or "", port=parts.port or 502, **common)
        return AsyncModbusSerialClient(
            parts.path,
            baudrate=self.cfg.baudrate,
            bytesize=self.cfg.bytesize,
            parity=self.cfg.parity[0].upper(),
            stopbits=self.cfg.stopbits,
            **common,
        )

    async def client(self) -> Client:
        """The connected client; connects first (at most once per backoff step)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a test, a restart): start over
            self._loop, self._lock, self._client = loop, asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:
            if self._client is not None and self._client.connected:
                return self._client
            if time.monotonic() < self._retry_at:
                raise DeviceFault("unreachable", self._why, key="url", value=self.url)
            self.drop()
            parts = urlsplit(self.url)
            if parts.scheme == "rtu" and not os.path.exists(parts.path):  # noqa: ASYNC240 - a stat of /dev
                self._failed(f"no serial port {parts.path}")
                raise DeviceRefused("unreachable", self._why, key="url", value=self.url)
            client = self._make()
            try:
                connected = await asyncio.wait_for(client.connect(), self.cfg.timeout_s + 1)
            except (OSError, TimeoutError) as exc:
                connected, self._why = False, str(exc)
            if not connected:
                client.close()
                self._failed(f"cannot connect to {self.url}")
                raise DeviceFault("unreachable", self._why, key="url", value=self.url)
            self._backoff.reset()
            self._client = client
            return client

    def _failed(self, why: str) -> None:
        self._why = why
        self._retry_at = time.monotonic() + self._backoff.next()

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


_BUSES: weakref.WeakValueDictionary[str, _Bus] = weakref.WeakValueDictionary()


def bus_for(cfg: ModbusSensor) -> _Bus:
    """The shared connection of this sensor's address or port; ValueError when another sensor
    on the same port configured the serial line (or timeouts) differently."""
    key = cfg.url
    bus = _BUSES.get(key)
    if bus is None:
        bus = _Bus(cfg)
        _BUSES[key] = bus
    elif bus.settings != _Bus(cfg).settings:
        raise ValueError(
            f"another sensor uses {cfg.url} with other baudrate/bytesize/parity/stopbits/timeout_s/retries: "
            "sensors on one port or address share one connection and must agree"
        )
    return bus


# -- the driver ----------------------------------------------------------------------------------
class ModbusDriver:
    driver = "modbus"

    def __init__(self, cfg: ModbusSensor) -> None:
        import logging

        # pymodbus logs every timeout and reconnect; the status below logs each change of state once
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.cfg = cfg
        self.sensor_type = cfg.type
        self.units: Mapping[str, str] = {r.name: r.units for r in cfg.registers}
        self.blocks = plan_blocks(cfg.registers, cfg.max_gap)
        self.bus = bus_for(cfg)
        self.status = DeviceStatus("modbus", cfg.sensor_id)

    @property
    def errors(self) -> Mapping[str, int]:
        return self.status.errors

    async def _read(self, block: Block) -> Sequence[int] | Sequence[bool]:
        from pymodbus.exceptions import ConnectionException, ModbusException

        client = await self.bus.client()
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        try:
            answer = await asyncio.wait_for(
                read(block.start, count=block.count, device_id=self.cfg.unit_id),
                self.cfg.timeout_s * (self.cfg.retries + 1) + 1,
            )
        except ConnectionException as exc:
            self.bus.drop()
            raise DeviceFault("unreachable", str(exc)) from None
        except (ModbusException, TimeoutError) as exc:
            # pymodbus says "no response" with a ModbusIOException; anything else is a broken
            # exchange, and the next poll starts on a fresh connection
            if "No response" not in str(exc):
                self.bus.drop()
            raise DeviceFault(
                "timeout", f"no answer from unit {self.cfg.unit_id} within {self.cfg.timeout_s:g} s"
            ) from None
        if answer.isError():
            code = answer.exception_code
            what = f"Modbus exception {code} ({EXCEPTIONS.get(code, 'unknown')})"
            detail = f"{block.table} {block.start}-{block.start + block.count - 1}: {what}"
            raise (DeviceRefused if code in REFUSALS else DeviceFault)("exception", detail)
        data = answer.bits if block.table in BIT_TABLES else answer.registers
        if len(data) < block.count:
            raise DeviceFault("exception", f"short answer: {len(data)} of {block.count}")
        return data

    async def poll(self) -> Sample | None:
        """One reading of the whole map; a block that fails is counted and left out."""
        ts = now_ms()
        values: dict[str, float] = {}
        failed = False
        for block in self.blocks:
            try:
                data = await self._read(block)
            except DeviceFault as fault:
                self.status.fault(fault)
                failed = True
                if fault.kind == "unreachable":
                    break  # the other blocks cannot fare better
                continue
            try:
                values.update(values_of(block, data, self.cfg.registers))
            except ValueError as exc:
                self.status.soft_fault("not_finite", str(exc))
        if not failed:
            self.status.ok()
        return Sample(ts, values) if values else None

    async def samples(self, interval_s: Callable[[], float]) -> AsyncIterator[Sample]:
        async for _ in ticks(interval_s):
            sample = await self.poll()
            if sample is not None:
                yield sample

    async def check(self) -> None:
        """Connect and read every block once; a refused block is narrowed to its first bad entry."""
        for block in self.blocks:
            try:
                await self._read(block)
            except DeviceRefused as refused:
                for i in block.members:
                    reg = self.cfg.registers[i]
                    single = Block(reg.table, reg.address, reg.count, (i,))
                    try:
                        await self._read(single)
                    except DeviceRefused as exc:
                        raise DeviceRefused(
                            "exception",
                            f"the device refuses it: {exc.detail}",
                            key=f"registers.{i}.address",
                            value=reg.address,
                        ) from None
                raise DeviceRefused(
                    "exception",
                    f"the device refuses the read {refused.detail}",
                    key="max_gap",
                    value=self.cfg.max_gap,
                ) from None
            except DeviceFault as fault:
                if fault.kind == "timeout":
                    fault.key, fault.value = "unit_id", self.cfg.unit_id
                raise
