"""The lean edge install: ``pip install 'moby[edge]'`` into a fresh virtual environment runs the
agent and reads a real Modbus device, without the backend's packages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moby.edge.buffer import EdgeBuffer, sensor_key
from moby.procs import ManagedProcess, free_port
from tests.devices.procs import ROOT, modbus_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKEND_ONLY = (
    "fastapi",
    "uvicorn",
    "aiohttp",
    "cryptography",
    "grafana_foundation_sdk",
    "prometheus_client",
)


def test_the_edge_extra_runs_the_agent_without_the_backend(tmp_path: Path, broker) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py, moby = venv / "bin" / "python", venv / "bin" / "moby"
    # a copy of the source, so that the build leaves nothing in the work tree
    src = tmp_path / "src"
    subprocess.run(
        ["cp", "-r", str(ROOT / "src"), str(ROOT / "pyproject.toml"), str(ROOT / "README.md"), str(tmp_path)],
        check=True,
    )
    installed = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", f"{tmp_path}[edge]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert src.exists()
    for module in BACKEND_ONLY:
        found = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, timeout=60)
        assert found.returncode != 0, f"{module} is installed by moby[edge]"
    helped = subprocess.run([str(moby), "edge", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--config" in helped.stdout, helped.stderr
    for command in (["broker", "init"], ["serve"], ["grafana", "export", str(tmp_path / "g")]):
        refused = subprocess.run([str(moby), *command], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2, (command, refused.stderr)
        assert refused.stderr.strip().endswith("not installed here: pip install 'moby[server]'"), (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr

    port = free_port()
    server = modbus_server(tmp_path / "mb", {"1": {"holding": {"0": [215]}}}, tcp=port).start()
    config = tmp_path / "edge.toml"
    config.write_text(
        f'factory_id = "f1"\nbrokers = ["{broker.url}"]\nbuffer_path = "{tmp_path}/edge.sqlite"\n'
        f'[[sensors]]\nsensor_id = "tt-lean"\ntype = "temperature"\ndriver = "modbus"\n'
        f'url = "tcp://127.0.0.1:{port}"\ninterval_s = 0.2\n'
        f'registers = [{{ name = "temperature", address = 0, data_type = "int16", scale = 0.1 }}]\n'
    )
    edge = ManagedProcess(
        "lean moby edge",
        [str(moby), "edge", "-c", str(config)],
        log_path=tmp_path / "edge.log",
        ready=lambda: True,
    ).start()
    try:
        time.sleep(3)
        edge.signal(signal.SIGTERM)
        assert edge.proc is not None and edge.proc.wait(30) == 0, edge.tail()
    finally:
        edge.stop()
        server.stop()
    with EdgeBuffer(tmp_path / "edge.sqlite", max_bytes=1 << 30, max_age_s=86400) as buffer:
        assert buffer.next_seq(sensor_key("f1", "tt-lean")) >= 5, edge.tail()  # read from the device …
        assert buffer.depth() == 0, edge.tail()  # … and published
