"""deploy/grafana cannot run here (no Docker): parse it and check it against `moby grafana export`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from moby.dashboards.export import ExportSettings, dashboard_provider

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
INSTANCES = ("grafana1", "grafana2", "grafana3")


@pytest.fixture(scope="module")
def compose() -> Any:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in (DEPLOY / "haproxy.cfg").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "\t")):
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.strip())
    return sections


def test_several_grafanas_share_one_database(compose: Any) -> None:
    services = compose["services"]
    assert set(INSTANCES) <= set(services)
    for name in INSTANCES:
        env = services[name]["environment"]
        assert env["GF_DATABASE_TYPE"] == "postgres"
        assert env["GF_DATABASE_HOST"].split(":")[0] == "postgres"
        # Same secret key everywhere, or sessions and data source secrets break across instances.
        assert env["GF_SECURITY_SECRET_KEY"].startswith("${GF_SECRET_KEY")
        assert env["GF_UNIFIED_ALERTING_HA_ADVERTISE_ADDRESS"] == f"{name}:9094"
        peers = env["GF_UNIFIED_ALERTING_HA_PEERS"].split(",")
        assert sorted(peers) == [f"{n}:9094" for n in INSTANCES]
        assert "./provisioning:/etc/grafana/provisioning:ro" in services[name]["volumes"]
        assert "ports" not in services[name], "only the load balancer is published"
    pg = services["postgres"]["environment"]
    env = services["grafana1"]["environment"]
    assert pg["POSTGRES_DB"] == env["GF_DATABASE_NAME"] and pg["POSTGRES_USER"] == env["GF_DATABASE_USER"]
    assert pg["POSTGRES_PASSWORD"] == env["GF_DATABASE_PASSWORD"]


def test_the_load_balancer_spreads_over_every_instance(compose: Any) -> None:
    sections = haproxy_sections()
    backend = sections["backend grafana"]
    servers = [line.split()[1:3] for line in backend if line.startswith("server ")]
    assert servers == [[n, f"{n}:3000"] for n in INSTANCES]
    assert all(line.endswith(" check") for line in backend if line.startswith("server "))
    assert "option httpchk GET /api/health" in backend
    assert "bind :3000" in sections["frontend grafana"]
    assert compose["services"]["haproxy"]["ports"] == ["3000:3000"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in compose["services"]["haproxy"]["volumes"]


def test_the_mounted_provisioning_matches_the_export_defaults(compose: Any) -> None:
    provider = dashboard_provider(ExportSettings())["providers"][0]
    mount = compose["services"]["grafana1"]["volumes"][0].split(":")[1]
    assert provider["options"]["path"].startswith(mount + "/")
    comment = (DEPLOY / "docker-compose.yml").read_text()
    # run on the host (`moby grafana ...`) or from the image (`moby:<version> grafana ...`)
    assert re.search(r"moby(:\S+)? grafana export \./provisioning", comment)


def test_every_grafana_gets_the_api_token_the_data_source_names(compose: Any) -> None:
    name = ExportSettings().api_token_env
    for instance in INSTANCES:
        value = compose["services"][instance]["environment"][name]
        assert value.startswith(f"${{{name}:?"), value  # from the operator's environment, never a literal
