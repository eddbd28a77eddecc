"""An asyncua OPC UA server: a PLC under test.

    python -m tests.devices.opcua_server --port PORT [--period 0.2] [--nodes N]

Namespace ``urn:moby:test`` (index 2), objects ``Plant/Oven``:
- ``Temp`` (``ns=2;s=Oven.Temp``): 20.0, +0.5 every ``--period`` seconds (a changing variable);
- ``Pressure`` (``ns=2;s=Oven.Pressure``): 1.5, Good until the file ``--bad-when`` appears, then
  status BadSensorFailure (and so no value: OPC UA servers send null with a Bad status);
- ``Level`` (``ns=2;s=Oven.Level``): 0.75 with status UncertainLastUsableValue;
- ``Label`` (``ns=2;s=Oven.Label``): a string, not a number;
- ``--nodes N`` more changing variables ``ns=2;s=Bench.N`` (the benchmark's).
It prints "ready" once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from asyncua import Server, ua


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--period", type=float, default=0.2)
    parser.add_argument("--nodes", type=int, default=0)
    parser.add_argument("--bad-when", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/moby/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:moby:test")
    plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))
    oven = await plant.add_object(ua.NodeId("Oven", ns), ua.QualifiedName("Oven", ns))
    temp = await oven.add_variable(ua.NodeId("Oven.Temp", ns), ua.QualifiedName("Temp", ns), 20.0)
    pressure = await oven.add_variable(ua.NodeId("Oven.Pressure", ns), ua.QualifiedName("Pressure", ns), 1.5)
    level = await oven.add_variable(ua.NodeId("Oven.Level", ns), ua.QualifiedName("Level", ns), 0.75)
    await oven.add_variable(ua.NodeId("Oven.Label", ns), ua.QualifiedName("Label", ns), "oven 1")
    bench = [
        await oven.add_variable(ua.NodeId(f"Bench.{i}", ns), ua.QualifiedName(f"Bench{i}", ns), 0.0)
        for i in range(args.nodes)
    ]

    async def go_bad() -> None:
        # polled: the test's signal is a file another process creates
        while args.bad_when is None or not args.bad_when.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await pressure.write_value(
            ua.DataValue(
                ua.Variant(1.5, ua.VariantType.Double), ua.StatusCode(ua.StatusCodes.BadSensorFailure)
            )
        )

    async with server:
        going_bad = asyncio.create_task(go_bad())
        await level.write_value(
            ua.DataValue(
                ua.Variant(0.75, ua.VariantType.Double),
                ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue),
            )
        )
        print("ready", flush=True)
        value = 20.0
        while True:
            await asyncio.sleep(args.period)
            value += 0.5
            await temp.write_value(value)
            for i, node in enumerate(bench):
                await node.write_value(value + i)
            if going_bad.done():
                going_bad.result()  # a failure here must show


if __name__ == "__main__":
    asyncio.run(main())
