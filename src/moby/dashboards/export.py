"""``moby grafana export DIR``: a provisioning tree Grafana loads as it is.

::

    DIR/datasources/moby.yaml        the MOBY proxy (default, with an API token) and InfluxDB direct
    DIR/dashboards/moby.yaml         a file provider for the folder "MOBY"
    DIR/dashboards/moby/*.json       the dashboards
    DIR/alerting/moby.yaml           the alert rule groups
    DIR/alerting/notifications.yaml  the contact point and the policy routing MOBY's rules to it
                                     (only when a webhook URL or an e-mail address is given)

Mount DIR as Grafana's provisioning folder (``/etc/grafana/provisioning``); the provider's
path names where the JSON files are *inside Grafana* (``--grafana-dir``).

No secret is ever written: the MOBY data source sends a viewer API token as its basic-auth
password, written as ``$MOBY_GRAFANA_TOKEN`` (``--api-token-env``), which Grafana replaces with
its own environment variable when it loads the file; the direct source's InfluxDB password is
``$MOBY_GRAFANA_INFLUX_PASSWORD`` the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from moby.dashboards.alerts import FOLDER, AlertSettings, rule_groups, to_file_format
from moby.dashboards.fleet import fleet_overview, sensor_detail
from moby.dashboards.influxql import DATASOURCE_UID, DIRECT_DATASOURCE_UID
from moby.dashboards.notify import Contacts, notifications
from moby.dashboards.pipeline import pipeline_health
from moby.dashboards.vibration import vibration
from moby.edge.features import MachineClass

HEADER = "# Written by `moby grafana export`; edit the Python (src/moby/dashboards), not this file.\n"


@dataclass(frozen=True)
class ExportSettings:
    api_url: str = "http://127.0.0.1:8000"  # the MOBY backend as Grafana reaches it
    influx_url: str = "http://127.0.0.1:8086"
    database: str = "moby"
    # With InfluxDB auth: the user, and the name of the environment variable holding the password
    # in Grafana's environment (provisioning files expand $VAR), so no secret lands in the file.
    influx_user: str | None = None
    password_env: str = "MOBY_GRAFANA_INFLUX_PASSWORD"
    # The environment variable of Grafana holding the viewer API token for the MOBY proxy
    # (`moby token create --role viewer --name grafana`); "" leaves the token out (an open
    # backend on loopback needs none).
    api_token_env: str = "MOBY_GRAFANA_TOKEN"
    grafana_dir: str = "/etc/grafana/provisioning"
    alerts: AlertSettings = field(default_factory=AlertSettings)
    contacts: Contacts = field(default_factory=Contacts)

    @property
    def machine_class(self) -> MachineClass:
        return self.alerts.machine_class


def dashboards(settings: ExportSettings) -> dict[str, Dashboard]:
    """File stem → dashboard."""
    return {
        "fleet-overview": fleet_overview(settings.machine_class),
        "sensor-detail": sensor_detail(),
        "vibration": vibration(settings.machine_class),
        "pipeline-health": pipeline_health(),
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    # Provisioned dashboards are identified by uid; a fixed id would clash across instances.
    data.pop("id", None)
    return data


def _source(name: str, uid: str, url: str, settings: ExportSettings, *, default: bool) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": name,
        "uid": uid,
        "type": "influxdb",
        "access": "proxy",
        "url": url,
        "isDefault": default,
        "editable": False,
        # "database" is what Grafana before 9 reads; newer versions read jsonData.dbName.
        "database": settings.database,
        "jsonData": {"version": "InfluxQL", "dbName": settings.database, "httpMode": "GET"},
    }
    return source


def _moby_source(settings: ExportSettings) -> dict[str, Any]:
    """The proxy: the token as the basic-auth password (a header, so it stays out of URLs and
    logs; the proxy takes any user name)."""
    source = _source("MOBY", DATASOURCE_UID, f"{settings.api_url.rstrip('/')}/influx", settings, default=True)
    if settings.api_token_env:
        source["basicAuth"] = True
        source["basicAuthUser"] = "grafana"
        source["secureJsonData"] = {"basicAuthPassword": f"${settings.api_token_env}"}
    return source


def _direct_source(settings: ExportSettings) -> dict[str, Any]:
    source = _source(
        "MOBY InfluxDB (direct)",
        DIRECT_DATASOURCE_UID,
        settings.influx_url.rstrip("/"),
        settings,
        default=False,
    )
    if settings.influx_user:
        source["user"] = settings.influx_user
        source["secureJsonData"] = {"password": f"${settings.password_env}"}
    return source


def datasources(settings: ExportSettings) -> dict[str, Any]:
    if settings.api_token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", settings.api_token_env):
        raise ValueError(f"{settings.api_token_env!r} is not an environment variable name")
    return {"apiVersion": 1, "datasources": [_moby_source(settings), _direct_source(settings)]}


def dashboard_provider(settings: ExportSettings) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "moby",
                "orgId": 1,
                "folder": FOLDER,
                "folderUid": "moby",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,  # the Python is the source of truth
                "updateIntervalSeconds": 60,
                "options": {
                    "path": f"{settings.grafana_dir.rstrip('/')}/dashboards/moby",
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }


def _write(path: Path, text: str, written: list[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    written.append(path)


def export(directory: Path, settings: ExportSettings = ExportSettings()) -> list[Path]:
    """Write the tree; returns the files written."""
    written: list[Path] = []
    as_yaml: Callable[[Any], str] = lambda doc: HEADER + yaml.safe_dump(doc, sort_keys=False, width=200)  # noqa: E731
    _write(directory / "datasources" / "moby.yaml", as_yaml(datasources(settings)), written)
    _write(directory / "dashboards" / "moby.yaml", as_yaml(dashboard_provider(settings)), written)
    for stem, dashboard in dashboards(settings).items():
        text = json.dumps(dashboard_json(dashboard), indent=2, ensure_ascii=False) + "\n"
        _write(directory / "dashboards" / "moby" / f"{stem}.json", text, written)
    alerts = to_file_format(rule_groups(settings.alerts))
    _write(directory / "alerting" / "moby.yaml", as_yaml(alerts), written)
    contacts = directory / "alerting" / "notifications.yaml"
    if settings.contacts.configured:
        _write(contacts, as_yaml(notifications(settings.contacts)), written)
    else:
        # Without addresses there is no contact point to write; one left by an earlier export
        # would keep notifying addresses the user no longer gave.
        contacts.unlink(missing_ok=True)
    return written
