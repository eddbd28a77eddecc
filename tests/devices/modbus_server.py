"""pymodbus's own server, serving a register map read from a JSON file: a device under test.

    python -m tests.devices.modbus_server --map map.json (--tcp PORT | --rtu /dev/pts/N)

The map: ``{"units": {"1": {"holding": {"0": [words]}, "input": {…}, "coil": {"0": [0, 1]},
"discrete": {…}}}}``: each table's keys are start addresses, the lists the 16-bit words (or bits)
from there. Addresses not in the map answer Modbus exception 2 (illegal data address), as a
real device's do. It prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def device(unit: int, tables: dict[str, dict[str, list[int]]]) -> SimDevice:
    def blocks(table: str, kind: DataType) -> list[SimData]:
        entries = tables.get(table, {})
        if not entries:  # pymodbus wants every table: one value at the top of the address space
            return [SimData(address=65535, values=[False] if kind is DataType.BITS else [0], datatype=kind)]
        return [
            SimData(
                address=int(start),
                values=[bool(v) for v in words] if kind is DataType.BITS else words,
                datatype=kind,
            )
            for start, words in entries.items()
        ]

    return SimDevice(
        id=unit,
        simdata=(
            blocks("coil", DataType.BITS),
            blocks("discrete", DataType.BITS),
            blocks("holding", DataType.REGISTERS),
            blocks("input", DataType.REGISTERS),
        ),
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--map", type=Path, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int)
    where.add_argument("--rtu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    spec = json.loads(args.map.read_text())
    devices = [device(int(unit), tables) for unit, tables in spec["units"].items()]
    if args.tcp is not None:
        server: ModbusTcpServer | ModbusSerialServer = ModbusTcpServer(
            devices, address=("127.0.0.1", args.tcp)
        )
    else:
        server = ModbusSerialServer(devices, port=args.rtu, baudrate=19200)
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
