"""A ``[[sensors]]`` table → its driver's model → a running driver; mistakes → one line each.

``driver`` selects the model (``simulated`` when left out, so older files keep working). What
a model cannot know — that the device is there and serves what the table says — is checked at
start-up by :func:`startup_check`: a device that refuses part of the configuration (a register
it does not have, a node it does not know, a program that cannot run) is a configuration
mistake, reported like a wrong key; an unreachable device stops the start too unless the agent
says ``startup_error_behavior = "retry"`` (Telegraf's setting of the same name).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic_core import InitErrorDetails

from moby.configerror import ConfigError, Loc, problem_lines, show_value, toml_key
from moby.edge.devices.base import DeviceDriver, DeviceFault, DeviceRefused
from moby.edge.devices.command import CommandSensor
from moby.edge.devices.modbus import ModbusSensor
from moby.edge.devices.opcua import OpcUaSensor
from moby.edge.devices.sensor import SimulatedSensor
from moby.edge.devices.serial import SerialSensor
from moby.edge.devices.waveform import WaveformSensor

if TYPE_CHECKING:
    from moby.edge.drivers import SensorDriver

log = structlog.get_logger("moby.edge.devices")

# driver name → (model, module of its driver class, driver class, the packages it needs, the extra)
DRIVERS: dict[str, tuple[type[BaseModel], str, str, tuple[str, ...], str]] = {
    "simulated": (SimulatedSensor, "", "", (), ""),
    "modbus": (ModbusSensor, "moby.edge.devices.modbus", "ModbusDriver", ("pymodbus", "serial"), "edge"),
    "opcua": (OpcUaSensor, "moby.edge.devices.opcua", "OpcUaDriver", ("asyncua",), "opcua"),
    "serial": (
        SerialSensor,
        "moby.edge.devices.serial",
        "SerialDriver",
        ("serial", "serial_asyncio_fast"),
        "edge",
    ),
    "command": (CommandSensor, "moby.edge.devices.command", "CommandDriver", (), ""),
    "waveform": (WaveformSensor, "moby.edge.devices.waveform", "WaveformDriver", (), ""),
}
STARTUP_CHECK_S = 15.0  # the longest a start-up check of one device may take


def _driver_of(value: Any) -> str:
    if isinstance(value, dict):
        driver = value.get("driver", "simulated")
        return driver if isinstance(driver, str) else repr(driver)
    return str(getattr(value, "driver", "simulated"))


SensorConfig = Annotated[
    Annotated[SimulatedSensor, Tag("simulated")]
    | Annotated[ModbusSensor, Tag("modbus")]
    | Annotated[OpcUaSensor, Tag("opcua")]
    | Annotated[SerialSensor, Tag("serial")]
    | Annotated[CommandSensor, Tag("command")]
    | Annotated[WaveformSensor, Tag("waveform")],
    Discriminator(_driver_of),
]
DeviceConfig = ModbusSensor | OpcUaSensor | SerialSensor | CommandSensor | WaveformSensor
StartupBehavior = Literal["error", "retry"]


def build_driver(cfg: DeviceConfig) -> DeviceDriver:
    """The driver of a device sensor; ValueError naming the missing package or the conflict."""
    _, module, cls, packages, extra = DRIVERS[cfg.driver]
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            hint = f"pip install 'moby[{extra}]'" if extra else "reinstall moby"
            raise ValueError(
                f"needs the Python package {package!r}, which is not installed ({hint})"
            ) from None
    driver: DeviceDriver = getattr(importlib.import_module(module), cls)(cfg)
    return driver


def make_sensor_driver(
    cfg: SimulatedSensor | DeviceConfig, index: int, source: object
) -> SensorDriver | DeviceDriver:
    """Used by the agent for every sensor: simulated ones by ``simulated``, the rest here."""
    from moby.edge.drivers import SimulatedHumidity, SimulatedNoise, SimulatedTemperature, SimulatedVibration

    if isinstance(cfg, SimulatedSensor):
        if cfg.type == "vibration":
            return SimulatedVibration(rpm=cfg.rpm, machine_class=cfg.machine_class, seed=cfg.seed)
        if cfg.type == "temperature":
            return SimulatedTemperature(seed=cfg.seed)
        if cfg.type == "humidity":
            return SimulatedHumidity(seed=cfg.seed)
        return SimulatedNoise(seed=cfg.seed)
    try:
        return build_driver(cfg)
    except ValueError as exc:
        raise ConfigError([f"{source}: [sensors.{index}] driver={cfg.driver!r}: {exc}"]) from None


# -- configuration mistakes as lines --------------------------------------------------------------
def _rebuild(title: str, errors: Sequence[Any]) -> ValidationError:
    details: list[InitErrorDetails] = [
        {"type": e["type"], "loc": tuple(e["loc"]), "input": e["input"], "ctx": e.get("ctx", {})}
        for e in errors
    ]
    return ValidationError.from_exception_data(title, details)


def config_problems(exc: ValidationError, model: type[BaseModel], where: str) -> list[str]:
    """An agent configuration's validation errors as lines; those inside a ``[[sensors]]`` table
    are described by its driver's model (the key, the value, what that driver allows)."""
    name_of: Callable[[Loc], str] = lambda loc: f"{where}: {toml_key(loc)}"  # noqa: E731
    top: list[Any] = []
    by_sensor: dict[tuple[int, str], list[Any]] = {}
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if len(loc) >= 2 and loc[0] == "sensors" and isinstance(loc[1], int):
            index = loc[1]
            if error["type"] == "union_tag_invalid":
                value = error["input"].get("driver") if isinstance(error["input"], dict) else None
                lines.append(
                    f"{where}: [sensors.{index}] driver={show_value(value)}: not one of the choices; "
                    f"allowed: one of {', '.join(DRIVERS)} (default simulated)"
                )
                continue
            if len(loc) >= 3 and loc[2] in DRIVERS:
                by_sensor.setdefault((index, str(loc[2])), []).append({**error, "loc": loc[3:]})
                continue
        top.append(error)
    if top:
        known = [*model.model_fields, *SimulatedSensor.model_fields]
        lines += problem_lines(_rebuild(model.__name__, top), model, name_of, known=known)
    for (index, driver), errors in by_sensor.items():
        sensor_model = DRIVERS[driver][0]
        known = list(sensor_model.model_fields)
        for error in errors:
            if isinstance(error["input"], dict | list) and error["type"] not in (
                "extra_forbidden",
                "missing",
            ):
                # a whole table is wrong (a rule between its keys): say so without dumping it
                message = str(error["msg"]).removeprefix("Value error, ")
                lines.append(f"{where}: {toml_key(('sensors', index, *error['loc']))}: {message}")
                continue
            lines += problem_lines(
                _rebuild(sensor_model.__name__, [error]), sensor_model, _prefixed(name_of, index), known=known
            )
    return lines


def _prefixed(name_of: Callable[[Loc], str], index: int) -> Callable[[Loc], str]:
    return lambda loc: name_of(("sensors", index, *loc))


def relative_paths(table: dict[str, Any], folder: Path) -> None:
    """File keys of a sensor table are taken from the configuration file's folder."""
    for key in ("certificate", "private_key", "server_certificate", "password_file"):
        if isinstance(table.get(key), str):
            table[key] = str(folder / table[key])


# -- start-up ---------------------------------------------------------------------------------------
async def startup_check(
    sensors: Sequence[tuple[int, str, object]], where: str, behavior: StartupBehavior
) -> None:
    """Reach every device once, all at the same time: ``(index, sensor id, driver)`` each.

    A refusal raises ConfigError (one line per sensor); an unreachable device too, unless
    ``behavior`` is ``retry`` (then it is logged and the agent keeps trying).
    """
    checks = [(i, sid, d) for i, sid, d in sensors if isinstance(d, DeviceDriver)]

    async def check(driver: DeviceDriver) -> DeviceFault | None:
        try:
            await asyncio.wait_for(driver.check(), STARTUP_CHECK_S)
        except DeviceFault as fault:
            return fault
        except TimeoutError:
            return DeviceFault("timeout", f"no reading within {STARTUP_CHECK_S:g} s")
        return None

    results = await asyncio.gather(*(check(d) for _, _, d in checks))
    problems: list[str] = []
    for (index, sensor_id, driver), fault in zip(checks, results, strict=True):
        if fault is None:
            continue
        key = fault.key or "driver"
        shown = f"={show_value(fault.value)}" if fault.value is not None else ""
        line = (
            f"{where}: [sensors.{index}] {key}{shown} (sensor {sensor_id}, {driver.driver}): {fault.detail}"
        )
        if isinstance(fault, DeviceRefused):
            problems.append(line)
        elif behavior == "error":
            problems.append(f'{line}; to start without it: startup_error_behavior = "retry"')
        else:
            log.warning("device not reachable at start; the agent keeps trying", problem=line)
    if problems:
        raise ConfigError(problems)
