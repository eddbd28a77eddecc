"""Real sensors at the edge: one driver module per protocol, configured in ``agent.toml``.

* :mod:`~moby.edge.devices.modbus` — Modbus TCP and RTU (pymodbus)
* :mod:`~moby.edge.devices.opcua` — OPC UA, subscriptions or polling (asyncua)
* :mod:`~moby.edge.devices.serial` — lines from a serial port (pyserial-asyncio-fast)
* :mod:`~moby.edge.devices.command` — a program's output, on an interval or as a stream
* :mod:`~moby.edge.devices.waveform` — raw accelerometer samples → vibration features

Each driver is an async :class:`~moby.edge.devices.base.DeviceDriver`: it yields
:class:`~moby.edge.devices.base.Sample` s (timestamped at acquisition, with a quality) on its own
schedule, never blocks another sensor, counts device errors for the health report and logs each
change of a device's state once. The protocol libraries are imported only by the driver that
needs them, so a lean install (``pip install 'moby[edge]'``) runs every driver it has the
libraries for; :mod:`~moby.edge.devices.config` holds the configuration models of all of them.
"""
