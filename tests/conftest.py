"""Fixtures: a real Mosquitto and a real InfluxDB on free ports in temporary folders."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from moby.broker.mosquitto import Mosquitto
from moby.procs import free_port
from moby.store.influxd import Influxd
from tests.support import Backend


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
    # A share group of the test's own: a persistent session left by an earlier test in the
    # same group would take its round-robin share of the messages (Mosquitto queues shared
    # messages for offline members too).
    share_group = f"g{uuid.uuid4().hex[:8]}"

    def make(broker: Mosquitto, influxd: Influxd, worker: str = "", **env: str) -> Backend:
        """A backend; with ``worker`` set, another member of the same share group."""
        backend = Backend(
            data_dir=tmp_path / f"backend{worker}",
            mqtt_url=broker.url,
            influx_url=influxd.url,
            db=db_name,
            client_id=client_id + worker,
            extra_env={"MOBY_MQTT_SHARE_GROUP": share_group, **{k.upper(): str(v) for k, v in env.items()}},
        )
        backend.start()
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.stop()
    if os.environ.get("MOBY_TEST_KEEP_LOGS"):
        print(f"backend logs in {tmp_path}")
