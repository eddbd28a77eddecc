"""Fixtures: a real Mosquitto and a real InfluxDB on free ports in temporary folders."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from moby.broker.mosquitto import Mosquitto
from moby.procs import free_port
from moby.store.influxd import Influxd
from tests.support import Backend, end_session


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto"), free_port())
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    i = Influxd(tmp_path_factory.mktemp("influxd"), free_port(), free_port())
    i.start(timeout_s=60)
    yield i
    i.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker this test alone uses (it may stop and restart it)."""
    b = Mosquitto(tmp_path / "mosquitto", free_port())
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[Influxd]:
    """An InfluxDB this test alone uses (it may stop and restart it)."""
    i = Influxd(tmp_path / "influxd", free_port(), free_port())
    i.start(timeout_s=60)
    yield i
    i.stop()


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_backend(tmp_path: Path, db_name: str) -> Iterator[object]:
    """Start `moby serve` as a real child process: make_backend(broker, influxd, **env)."""
    started: list[Backend] = []
    client_id = f"moby-test-{uuid.uuid4().hex[:8]}"
    sessions: set[tuple[str, int, str]] = set()

    def make(broker: Mosquitto, influxd: Influxd, worker: str = "", **env: str) -> Backend:
        """A backend; with ``worker`` set, another member of the same share group."""
        backend = Backend(
            data_dir=tmp_path / f"backend{worker}",
            mqtt_url=broker.url,
            influx_url=influxd.url,
            db=db_name,
            client_id=client_id + worker,
            extra_env={k.upper(): str(v) for k, v in env.items()},
        )
        sessions.add(("127.0.0.1", broker.port, client_id + worker))
        backend.start()
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.stop()
    # End the backends' persistent sessions, or the shared broker would keep queuing every
    # later test's messages for them.
    for host, port, cid in sessions:
        asyncio.run(end_session(host, port, cid))
    if os.environ.get("MOBY_TEST_KEEP_LOGS"):
        print(f"backend logs in {tmp_path}")


@pytest.fixture
def unlimited_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker without ``max_packet_size`` (Mosquitto's default): it takes messages of any size."""
    b = Mosquitto(tmp_path / "unlimited-mosquitto", free_port())
    conf = b.directory / "mosquitto.conf"
    lines = conf.read_text().splitlines()
    conf.write_text("\n".join(line for line in lines if not line.startswith("max_packet_size")) + "\n")
    b.start()
    yield b
    b.stop()
