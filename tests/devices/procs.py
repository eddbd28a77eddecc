"""Independent devices for the driver tests, each a child process on a free port or pty.

pymodbus's server and an asyncua server run as programs of their own (:mod:`tests.devices.
modbus_server`, :mod:`tests.devices.opcua_server`), so the agent talks to them only through
the protocol. Serial lines come from a ``socat`` pseudo-terminal pair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from moby.procs import ManagedProcess, port_open

ROOT = Path(__file__).resolve().parents[2]


def _said_ready(log: Path) -> bool:
    try:
        return "ready" in log.read_text()
    except OSError:
        return False


def modbus_server(
    folder: Path, units: dict[str, Any], *, tcp: int | None = None, rtu: str | None = None
) -> ManagedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "map.json"
    spec.write_text(json.dumps({"units": units}))
    where = ["--tcp", str(tcp)] if tcp is not None else ["--rtu", str(rtu)]
    log = folder / "modbus-server.log"
    return ManagedProcess(
        "modbus server",
        [sys.executable, "-m", "tests.devices.modbus_server", "--map", str(spec), *where],
        log_path=log,
        ready=(lambda: port_open(tcp)) if tcp is not None else (lambda: _said_ready(log)),
        cwd=ROOT,
    )


def opcua_server(folder: Path, port: int, *args: str) -> ManagedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"opcua-server-{port}.log"
    return ManagedProcess(
        "opcua server",
        [sys.executable, "-m", "tests.devices.opcua_server", "--port", str(port), *args],
        log_path=log,
        ready=lambda: _said_ready(log) and port_open(port),
        cwd=ROOT,
    )


def pty_pair(folder: Path, name: str) -> tuple[ManagedProcess, Path, Path]:
    """``socat`` joining two pseudo-terminals: what is written to one end is read at the other,
    as over a null-modem cable. Returns the process and the two ends (symlinks)."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"{name}-a", folder / f"{name}-b"
    proc = ManagedProcess(
        f"socat {name}",
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        log_path=folder / f"socat-{name}.log",
        ready=lambda: a.exists() and b.exists(),
    )
    return proc, a, b
