"""The image's health check against a real `moby serve` and `moby proxy`, run as Docker runs it:
a separate process with the container's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from moby.broker.mosquitto import Mosquitto
from moby.procs import free_port
from moby.store.influxd import Influxd
from tests.proxy_support import Proxy

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "image" / "healthcheck.py"


def healthcheck(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOBY_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *command],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_tokens_required_is_healthy_until_it_stops(
    broker: Mosquitto, influxd: Influxd, make_backend: Any
) -> None:
    # The image listens on 0.0.0.0, where MOBY requires API tokens; `required` is the same policy
    # on loopback (tests listen nowhere else).
    backend = make_backend(broker, influxd, moby_api_auth="required")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{backend.api}/api/v1/sensors", timeout=5)
    assert refused.value.code == 401  # no token: refused, so tokens really are required
    env = {"MOBY_API_PORT": str(backend.api_port), "MOBY_API_AUTH": "required"}
    done = healthcheck(["moby", "serve"], env)
    assert (done.returncode, done.stderr) == (0, "")
    backend.stop()
    done = healthcheck(["moby", "serve"], env)
    assert done.returncode == 1
    assert done.stderr.startswith(f"unhealthy: http://127.0.0.1:{backend.api_port}/healthz: no answer (")
    assert done.stderr.count("\n") == 1  # one line, no traceback


def test_a_proxy_whose_influxdb_is_away_is_still_alive(tmp_path: Path) -> None:
    away = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}")
    proxy = Proxy(tmp_path, away, "moby")  # type: ignore[arg-type]
    proxy.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as bad_gateway:
            urllib.request.urlopen(f"{proxy.url}/ping", timeout=5)
        assert bad_gateway.value.code == 502
        done = healthcheck(["moby", "proxy"], {"MOBY_PROXY_PORT": str(proxy.port)})
        assert (done.returncode, done.stderr) == (0, "")
    finally:
        proxy.stop()
    done = healthcheck(["moby", "proxy", f"--port={proxy.port}"], {})
    assert done.returncode == 1 and "/ping: no answer" in done.stderr
