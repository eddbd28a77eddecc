"""The device drivers' pure parts: read plans, decoding, line formats, OPC UA quality, windows,
configuration lines, and logging once per change of a device's state."""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from moby.edge.agent import AgentConfig
from moby.edge.devices.base import DeviceFault, DeviceStatus
from moby.edge.devices.command import CommandDriver, CommandSensor
from moby.edge.devices.config import config_problems
from moby.edge.devices.lines import LineFormat, LineParser
from moby.edge.devices.modbus import ModbusRegister, ModbusSensor, decode, plan_blocks, values_of
from moby.edge.devices.opcua import OpcUaSensor, quality_of, worst
from moby.edge.devices.waveform import WaveformSensor, Windows
from moby.schema.payloads import Quality


def reg(**kw: object) -> ModbusRegister:
    return ModbusRegister.model_validate({"name": "v", "address": 0, **kw})


def test_neighbouring_registers_are_read_together_within_the_spec_limits() -> None:
    regs = [
        reg(name="a", address=0),
        reg(name="b", address=1, data_type="float32"),  # 1-2
        reg(name="c", address=5),
        reg(name="d", table="input", address=3),
        reg(name="e", table="coil", address=7),
        reg(name="f", table="coil", address=8),
    ]
    assert [(b.table, b.start, b.count, b.members) for b in plan_blocks(regs)] == [
        ("holding", 0, 3, (0, 1)),
        ("holding", 5, 1, (2,)),
        ("input", 3, 1, (3,)),
        ("coil", 7, 2, (4, 5)),
    ]
    assert [(b.start, b.count) for b in plan_blocks(regs, max_gap=2)][:1] == [(0, 6)]
    many = [reg(name=f"r{i}", address=i) for i in range(130)]
    assert [(b.start, b.count) for b in plan_blocks(many)] == [(0, 125), (125, 5)]


@pytest.mark.parametrize(
    ("data_type", "fmt", "value", "word_order", "byte_order"),
    [
        ("int16", ">h", -2, "big", "big"),
        ("uint16", ">H", 65000, "big", "big"),
        ("int32", ">i", -123456, "little", "big"),
        ("uint32", ">I", 4_000_000_000, "big", "big"),
        ("float32", ">f", 40.25, "big", "little"),
        ("float64", ">d", -1.0e-3, "little", "little"),
    ],
)
def test_decoding_every_data_type_and_order(
    data_type: str, fmt: str, value: float, word_order: str, byte_order: str
) -> None:
    raw = struct.pack(fmt, value)
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [int.from_bytes(w.to_bytes(2, "big"), "little") for w in words]
    if word_order == "little":
        words.reverse()
    r = reg(data_type=data_type, word_order=word_order, byte_order=byte_order, scale=2.0, offset=1.0)
    assert decode(words, r) == pytest.approx(value * 2.0 + 1.0)


def test_a_float_register_holding_nan_is_refused() -> None:
    r = reg(data_type="float32")
    [block] = plan_blocks([r])
    nan = struct.pack(">f", float("nan"))
    with pytest.raises(ValueError, match="holds nan"):
        values_of(block, [int.from_bytes(nan[:2], "big"), int.from_bytes(nan[2:], "big")], [r])


@pytest.mark.parametrize(
    "bad",
    [
        {"table": "coil", "data_type": "int16"},
        {"table": "holding", "data_type": "bool"},
        {"address": 65535, "data_type": "float32"},
        {"address": -1},
        {"name": "seq"},
        {"name": "Temp"},
        {"scale": float("inf")},
    ],
)
def test_a_register_that_cannot_be_read_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        reg(**bad)


def test_modbus_urls() -> None:
    base = {
        "sensor_id": "s",
        "type": "temperature",
        "driver": "modbus",
        "registers": [{"name": "t", "address": 0}],
    }
    for good in ("tcp://10.0.0.5", "tcp://plc.local:5020", "rtu:///dev/ttyUSB0"):
        ModbusSensor.model_validate({**base, "url": good})
    for bad in ("10.0.0.5:502", "tcp://:502", "rtu://dev/ttyUSB0", "udp://x", "tcp://h:99999"):
        with pytest.raises(ValidationError):
            ModbusSensor.model_validate({**base, "url": bad})


def test_line_formats_take_only_the_declared_values() -> None:
    names = {"temperature": "degC", "humidity": "%RH"}
    kv = LineParser.of(LineFormat.KEY_VALUE, names, None)
    assert kv.parse("temperature=21.5, humidity=40;status=ok id=3\r") == {
        "temperature": 21.5,
        "humidity": 40.0,
    }
    js = LineParser.of(LineFormat.JSON, names, None)
    assert js.parse('{"temperature": 21.5, "other": "x"}') == {"temperature": 21.5}
    rx = LineParser.of(LineFormat.REGEX, names, r"T=(?P<temperature>\S+) H=(?P<humidity>\S+)")
    assert rx.parse("> T=21.5 H=40 <") == {"temperature": 21.5, "humidity": 40.0}
    for parser, line in [
        (kv, "status=ok"),
        (kv, "temperature=nan"),
        (kv, "temperature=abc"),
        (js, "[1, 2]"),
        (js, '{"temperature": true}'),
        (js, "{broken"),
        (rx, "nothing here"),
        (kv, "   "),
    ]:
        with pytest.raises(ValueError):
            parser.parse(line)


def test_opc_ua_status_codes_become_the_contracts_quality() -> None:
    from asyncua import ua

    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) is Quality.GOOD
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) is Quality.UNCERTAIN
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadSensorFailure)) is Quality.BAD
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) is Quality.BAD
    assert worst([Quality.GOOD, Quality.BAD, Quality.UNCERTAIN]) is Quality.BAD
    assert worst([]) is Quality.GOOD


def test_opc_ua_settings_that_go_together() -> None:
    base = {"sensor_id": "s", "type": "temperature", "driver": "opcua", "endpoint": "opc.tcp://plc:4840"}
    node = {"name": "t", "node_id": "ns=2;s=Oven.Temp"}
    OpcUaSensor.model_validate({**base, "nodes": [node]})
    for bad in [
        {"nodes": [{"name": "t"}]},
        {"nodes": [{**node, "browse_path": "0:Objects/2:T"}]},
        {"nodes": [{"name": "t", "node_id": "Oven.Temp"}]},
        {"nodes": [node, node]},
        {"nodes": [node], "security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"},
        {"nodes": [node], "security_mode": "Sign"},
        {"nodes": [node], "username": "plc"},
        {"nodes": [node], "endpoint": "http://plc"},
    ]:
        with pytest.raises(ValidationError):
            OpcUaSensor.model_validate({**base, **bad})


def test_windows_are_cut_from_a_byte_stream_in_any_pieces() -> None:
    cfg = WaveformSensor.model_validate(
        {
            "sensor_id": "v",
            "driver": "waveform",
            "source": "fifo",
            "path": "/tmp/x",
            "sample_rate_hz": 2000,
            "sensitivity": 0.5,
            "sensitivity_units": "g",
            "window_s": 0.01 * 250,
        }
    )
    windows = Windows(cfg)
    data = np.arange(12_000, dtype="<i2").tobytes()
    got = []
    for i, at in enumerate(range(0, len(data), 777)):  # 777: splits samples in half
        got += windows.feed(data[at : at + 777], i)
    assert [len(w) for _, w in got] == [5000, 5000]
    assert got[0][1][:3] == pytest.approx(np.array([0, 1, 2]) * 0.5 * 9.80665)
    assert got[1][1][0] == pytest.approx(5000 * 0.5 * 9.80665)
    assert got[1][0] == 10_000 // 777  # stamped when its first bytes (sample 5000, byte 10,000) arrived


def test_a_device_state_is_logged_once_per_change() -> None:
    status = DeviceStatus("modbus", "tt-1")
    with capture_logs() as logs:
        for _ in range(50):
            status.fault(DeviceFault("timeout", "no answer"))
        status.fault(DeviceFault("unreachable", "refused"))
        status.fault(DeviceFault("unreachable", "refused"))
        status.ok()
        status.ok()
        for _ in range(10):
            status.soft_fault("parse", "bad line")
    assert status.errors == {"modbus_timeout": 50, "modbus_unreachable": 2, "modbus_parse": 10}
    assert [e["event"] for e in logs] == [
        "device fault; retrying, quiet until this changes",
        "device fault; retrying, quiet until this changes",
        "device answers again",
        "reading dropped",
    ]


def problems(tmp_path: Path, sensor: str) -> list[str]:
    path = tmp_path / "agent.toml"
    path.write_text(f'factory_id = "f1"\n[[sensors]]\nsensor_id = "s1"\n{sensor}\n')
    with pytest.raises(ValidationError) as caught:
        AgentConfig.load(path)
    return [line.removeprefix(f"{path}: ") for line in config_problems(caught.value, AgentConfig, str(path))]


def test_configuration_mistakes_name_the_sensor_key_and_what_its_driver_allows(tmp_path: Path) -> None:
    modbus = 'type = "temperature"\ndriver = "modbus"\nurl = "tcp://h"\n'
    register = '[[sensors.registers]]\nname = "t"\naddress = 0\n'
    assert problems(tmp_path, 'type = "noise"\ndriver = "modbsu"') == [
        "[sensors.0] driver='modbsu': not one of the choices; allowed: one of simulated, modbus, opcua, "
        "serial, command, waveform (default simulated)"
    ]
    assert problems(tmp_path, modbus + "unit = 3\n" + register) == [
        "[sensors.0] unit: not a known setting (did you mean unit_id?)"
    ]
    assert problems(tmp_path, modbus + "unit_id = 300\n" + register) == [
        "[sensors.0] unit_id=300: should be less than or equal to 255; allowed: an integer ≥ 0 and ≤ 255 "
        "(default 1)"
    ]
    assert problems(tmp_path, modbus.replace("tcp://h", "h:502") + register) == [
        "[sensors.0] url='h:502': should be tcp://HOST[:PORT] or rtu:///dev/PORT"
    ]
    assert problems(tmp_path, modbus + register + 'table = "coil"\ndata_type = "float32"\n') == [
        "[sensors.0] registers[0]: data_type 'float32' does not fit table 'coil': coils and discrete inputs "
        "are bool, holding and input registers int16/uint16/int32/uint32/float32/float64"
    ]
    assert problems(tmp_path, modbus + register + 'data_type = "float"\n') == [
        "[sensors.0.registers.0] data_type='float': not one of the choices; allowed: one of int16, uint16, "
        "int32, uint32, float32, float64, bool"
    ]
    # a simulated sensor (no driver) reads as before
    assert problems(tmp_path, 'type = "noise"\ninterval_s = 0') == [
        "[sensors.0] interval_s=0: should be greater than 0; allowed: a number > 0 (default 1.0)"
    ]


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def command_driver(*argv: str, **kw: object) -> CommandDriver:
    return CommandDriver(
        CommandSensor.model_validate(
            {
                "sensor_id": "c",
                "type": "noise",
                "driver": "command",
                "command": list(argv),
                "values": {"laeq": "dB(A)"},
                "format": "json",
                **kw,
            }
        )
    )


def test_the_command_driver_runs_a_program_and_counts_its_failures() -> None:
    ok = command_driver(sys.executable, "-c", "print('{\"laeq\": 71.5}'); print('junk')")
    samples, failure = run(ok.run_once())  # type: ignore[misc]
    assert [s.values for s in samples] == [{"laeq": 71.5}] and failure is None
    assert ok.errors == {"command_parse": 1}
    failing = command_driver(
        sys.executable, "-c", "import sys; print('{\"laeq\": 1}'); sys.exit('no device')"
    )
    samples, failure = run(failing.run_once())  # type: ignore[misc]
    assert len(samples) == 1 and failure == "exited with status 1: no device"
    slow = command_driver(sys.executable, "-c", "import time; time.sleep(30)", timeout_s=0.5)
    with pytest.raises(DeviceFault, match="killed"):
        run(slow.run_once())
    with pytest.raises(DeviceFault, match="no such program"):
        run(command_driver("/nonexistent/tool").check())


def test_a_stream_that_ends_is_counted_and_restarted(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = f"open({str(runs)!r}, 'a').write('x'); print('{{\"laeq\": 70}}', flush=True)"
    driver = command_driver(sys.executable, "-c", script, mode="stream")

    async def take(n: int) -> list[object]:
        got = []
        async for sample in driver.samples(lambda: 1.0):
            got.append(sample)
            if len(got) == n:
                break
        return got

    assert len(run(take(2))) == 2  # type: ignore[arg-type]
    assert runs.read_text() == "xx"  # the program ran twice
    assert driver.errors["command_exit"] >= 1


def test_the_example_of_every_driver_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "devices.toml"
    config = AgentConfig.load(example)
    assert [s.driver for s in config.sensors] == [
        "modbus", "modbus", "opcua", "serial", "command", "waveform"
    ]  # fmt: skip
    opcua = config.sensors[2]
    assert isinstance(opcua, OpcUaSensor) and opcua.certificate == example.parent / "opcua" / "client.der"
