"""`moby grafana export` writes what Grafana's provisioning documents, field by field.

Checks written from Grafana's docs: "Provision Grafana" (data sources: apiVersion, datasources
with name/type/access/url, jsonData; dashboard providers: name/type/options.path), the
dashboard JSON model (uid, title, schemaVersion, panels with type/gridPos/targets, templating
list), the InfluxDB data source's query model (refId, query, rawQuery, resultFormat) and
alerting file provisioning (groups with orgId/name/folder/interval; rules with uid/title/
condition/data/for/noDataState/execErrState; data items with refId/datasourceUid/model;
contactPoints with orgId/name/receivers of uid/type/settings; policies with orgId/receiver/
group_by/object_matchers/routes and the group_wait/group_interval/repeat_interval durations).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from moby.cli import app
from moby.dashboards.alerts import AlertSettings
from moby.dashboards.export import ExportSettings, export
from moby.dashboards.notify import Contacts, email_addresses, notifications, webhook_url
from moby.edge.features import ZONE_LIMITS_MM_S, MachineClass
from tests.grafana import alert_queries, dashboard_queries, grafana_interval, regex_escape, substitute

# Panel types Grafana ships (core visualisations) that we may use.
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "gauge", "text", "row", "state-timeline"}
DURATION = re.compile(r"^\d+[smhd]$")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("provisioning")
    export(directory, ExportSettings(api_url="http://moby-api:8000", influx_url="http://influxdb:8086"))
    return directory


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_tree(tree: Path) -> None:
    files = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
    assert files == {
        "datasources/moby.yaml",
        "dashboards/moby.yaml",
        "dashboards/moby/fleet-overview.json",
        "dashboards/moby/sensor-detail.json",
        "dashboards/moby/vibration.json",
        "dashboards/moby/pipeline-health.json",
        "alerting/moby.yaml",
    }


def test_data_sources(tree: Path) -> None:
    doc = load_yaml(tree / "datasources" / "moby.yaml")
    assert doc["apiVersion"] == 1
    sources = {s["uid"]: s for s in doc["datasources"]}
    assert set(sources) == {"moby", "moby-influxdb"}
    for s in sources.values():
        assert {"name", "type", "access", "url", "jsonData"} <= set(s)
        assert s["type"] == "influxdb" and s["access"] == "proxy"
        assert s["jsonData"]["version"] == "InfluxQL"
        assert s["jsonData"]["dbName"] == s["database"] == "moby"
        assert "user" not in s  # no InfluxDB auth configured
    assert "secureJsonData" not in sources["moby-influxdb"]
    assert sources["moby"]["url"] == "http://moby-api:8000/influx"
    assert sources["moby"]["isDefault"] is True
    assert sources["moby-influxdb"]["url"] == "http://influxdb:8086"
    assert sum(s["isDefault"] for s in sources.values()) == 1


def test_credentials_come_from_grafanas_environment(tmp_path: Path) -> None:
    export(tmp_path, ExportSettings(influx_user="grafana"))
    text = (tmp_path / "datasources" / "moby.yaml").read_text()
    sources = {s["uid"]: s for s in yaml.safe_load(text)["datasources"]}
    direct = sources["moby-influxdb"]
    assert direct["user"] == "grafana"
    assert direct["secureJsonData"] == {"password": "$MOBY_GRAFANA_INFLUX_PASSWORD"}
    # The proxy takes a MOBY API token, never the InfluxDB user (Grafana would send it as u/p).
    assert "user" not in sources["moby"]


def test_the_proxy_source_sends_a_viewer_token_from_grafanas_environment(tmp_path: Path) -> None:
    """Basic auth with the token as the password (a header, never the URL); the file names
    Grafana's environment variable, which Grafana expands when it loads it: no token on disk."""
    export(tmp_path, ExportSettings())
    text = (tmp_path / "datasources" / "moby.yaml").read_text()
    moby = {s["uid"]: s for s in yaml.safe_load(text)["datasources"]}["moby"]
    assert moby["basicAuth"] is True and moby["basicAuthUser"]
    assert moby["secureJsonData"] == {"basicAuthPassword": "$MOBY_GRAFANA_TOKEN"}
    assert not re.search(r"moby_[0-9a-f]{16}_", text)  # no token literal

    other = tmp_path / "other"
    result = CliRunner().invoke(app, ["grafana", "export", str(other), "--api-token-env", "GF_MOBY_TOKEN"])
    assert result.exit_code == 0, result.output
    moby = {s["uid"]: s for s in load_yaml(other / "datasources" / "moby.yaml")["datasources"]}["moby"]
    assert moby["secureJsonData"] == {"basicAuthPassword": "$GF_MOBY_TOKEN"}

    none = tmp_path / "none"
    assert CliRunner().invoke(app, ["grafana", "export", str(none), "--api-token-env", ""]).exit_code == 0
    moby = {s["uid"]: s for s in load_yaml(none / "datasources" / "moby.yaml")["datasources"]}["moby"]
    assert "basicAuth" not in moby and "secureJsonData" not in moby


def test_a_token_variable_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["grafana", "export", str(tmp_path), "--api-token-env", "moby_abc$x"])
    assert result.exit_code == 2 and "--api-token-env" in result.output
    assert not (tmp_path / "datasources").exists()


def test_dashboard_provider(tree: Path) -> None:
    doc = load_yaml(tree / "dashboards" / "moby.yaml")
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["folder"] == "MOBY"
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/moby"


def _walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out += _walk(p.get("panels", []))
    return out


@pytest.mark.parametrize("name", ["fleet-overview", "sensor-detail", "vibration", "pipeline-health"])
def test_dashboard_json_model(tree: Path, name: str) -> None:
    data = json.loads((tree / "dashboards" / "moby" / f"{name}.json").read_text())
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time"} <= set(data)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", data["uid"])
    assert "id" not in data or data["id"] is None
    panels = _walk(data["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["type"] in PANEL_TYPES, p["type"]
        pos = p["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == {"type": "influxdb", "uid": "moby"}
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["rawQuery"] is True and t["resultFormat"] in ("time_series", "table")
            assert t["refId"] and t["query"].startswith("SELECT ")
            assert "$timeFilter" in t["query"]
    for v in data["templating"]["list"]:
        assert v["type"] == "query" and v["datasource"]["uid"] == "moby"
        assert v["query"].startswith("SHOW TAG VALUES")
        assert v["multi"] and v["includeAll"]
    names = [v["name"] for v in data["templating"]["list"]]
    if name != "pipeline-health":
        assert names[0] == "factory_id"
    if name in ("sensor-detail", "vibration"):
        assert names == ["factory_id", "sensor_id"]


def test_sensor_detail_reads_auto_and_fleet_overview_reads_rollups(tree: Path) -> None:
    detail, _ = dashboard_queries(tree / "dashboards" / "moby" / "sensor-detail.json")
    assert detail and all('FROM "auto".' in q.text and "GROUP BY time($__interval)" in q.text for q in detail)
    assert all("/^$factory_id$/" in q.text and "/^$sensor_id$/" in q.text for q in detail)
    fleet, _ = dashboard_queries(tree / "dashboards" / "moby" / "fleet-overview.json")
    assert all('"raw".' not in q.text and '"auto".' not in q.text and '"rollup_1m".' in q.text for q in fleet)


@pytest.mark.parametrize("mc", list(MachineClass))
def test_vibration_thresholds_are_the_iso_zone_limits(tmp_path: Path, mc: MachineClass) -> None:
    export(tmp_path, ExportSettings(alerts=AlertSettings(machine_class=mc)))
    data = json.loads((tmp_path / "dashboards" / "moby" / "vibration.json").read_text())
    panel = data["panels"][0]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, *ZONE_LIMITS_MM_S[mc]]
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    rules = {
        r["uid"]: r for g in load_yaml(tmp_path / "alerting" / "moby.yaml")["groups"] for r in g["rules"]
    }
    threshold = rules["moby-vibration-zone-d"]["data"][2]["model"]["conditions"][0]["evaluator"]["params"]
    assert threshold == [ZONE_LIMITS_MM_S[mc][2]]


def test_alert_rules_file_format(tree: Path) -> None:
    doc = load_yaml(tree / "alerting" / "moby.yaml")
    assert doc["apiVersion"] == 1
    uids = []
    for group in doc["groups"]:
        assert {"orgId", "name", "folder", "interval", "rules"} <= set(group)
        assert DURATION.match(group["interval"])
        for rule in group["rules"]:
            uids.append(rule["uid"])
            assert {"uid", "title", "condition", "data", "for", "noDataState", "execErrState"} <= set(rule)
            assert rule["noDataState"] in ("Alerting", "NoData", "OK")
            assert rule["execErrState"] in ("Alerting", "Error", "OK")
            assert DURATION.match(rule["for"])
            refs = [d["refId"] for d in rule["data"]]
            assert rule["condition"] in refs
            for d in rule["data"]:
                assert {"refId", "datasourceUid", "model"} <= set(d)
                if d["datasourceUid"] == "__expr__":
                    assert d["model"]["type"] in ("reduce", "threshold", "math")
                    assert d["model"]["expression"] in refs
                else:
                    assert d["datasourceUid"] == "moby" and d["relativeTimeRange"]["from"] > 0
                    assert d["model"]["rawQuery"] is True
            # Grafana expands $VAR in labels (not annotations or models): none may hold a "$".
            assert all("$" not in v for v in rule.get("labels", {}).values())
            for key in ("folderUID", "orgID", "ruleGroup"):  # API fields, not file fields
                assert key not in rule
    assert len(uids) == len(set(uids))
    assert set(uids) >= {
        "moby-vibration-zone-c",
        "moby-vibration-zone-d",
        "moby-sensor-offline",
        "moby-dead-letters",
    }


def test_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["grafana", "export", str(tmp_path), "--machine-class", "group_1_rigid"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.rglob("*.json"))) == 4
    bad = CliRunner().invoke(app, ["grafana", "export", str(tmp_path / "x"), "--machine-class", "huge"])
    assert bad.exit_code != 0


# --- the test helper that plays Grafana ---------------------------------------------------------


def test_substitution_like_grafana() -> None:
    q = (
        'SELECT mean("x") FROM "auto"."m" WHERE "s" =~ /^$sensor_id$/ AND $timeFilter '
        "GROUP BY time($__interval)"
    )
    one = substitute(q, start_ms=1000, end_ms=2000, interval="10s", variables={"sensor_id": ["vib-1"]})
    assert one == (
        'SELECT mean("x") FROM "auto"."m" WHERE "s" =~ /^vib\\-1$/ AND time >= 1000ms and time <= 2000ms '
        "GROUP BY time(10s)"
    )
    many = substitute(q, start_ms=0, end_ms=1, interval="1m", variables={"sensor_id": ["a.b", "c"]})
    assert "/^(a\\.b|c)$/" in many
    with pytest.raises(AssertionError):
        substitute(q, start_ms=0, end_ms=1, interval="1m", variables={})
    assert regex_escape("f-1/x") == "f\\-1\\/x"


def test_interval_like_grafana() -> None:
    assert grafana_interval(3 * 3600_000, None) == "10s"
    assert grafana_interval(15 * 60_000, None) == "1s"
    assert grafana_interval(15 * 60_000, "1m") == "1m"
    assert grafana_interval(90 * 86400_000, None) == "2h"


def test_every_query_is_found(tree: Path) -> None:
    total = 0
    for path in (tree / "dashboards" / "moby").glob("*.json"):
        queries, variables = dashboard_queries(path)
        total += len(queries) + len(variables)
        assert all(q.text.startswith("SELECT ") for q in queries)
    assert total >= 25
    assert len(alert_queries(tree / "alerting" / "moby.yaml")) == 6


# --- notifications: the contact point and the policy that routes MOBY's rules to it --------------

CONTACTS = Contacts(
    webhook_url="https://hooks.example.com/moby", emails=("ops@example.com", "pm@example.com")
)


def _route(policy: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The policy node an alert with ``labels`` ends at, as Grafana walks the tree (first match)."""
    for child in policy.get("routes", []):
        matches = all(
            (labels.get(name) == value) if op == "=" else bool(re.fullmatch(value, labels.get(name, "")))
            for name, op, value in child.get("object_matchers", [])
        )
        if matches:
            return _route(child, labels)
    return policy


def test_notifications_file_format(tmp_path: Path) -> None:
    """Grafana's file provisioning of contact points and notification policies (apiVersion 1)."""
    export(tmp_path, ExportSettings(contacts=CONTACTS))
    doc = load_yaml(tmp_path / "alerting" / "notifications.yaml")
    assert doc["apiVersion"] == 1
    [point] = doc["contactPoints"]
    assert point["orgId"] == 1 and point["name"] == "MOBY"
    receivers = {r["type"]: r for r in point["receivers"]}
    assert set(receivers) == {"webhook", "email"}
    for r in point["receivers"]:
        assert {"uid", "type", "settings"} <= set(r)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", r["uid"])
    assert len({r["uid"] for r in point["receivers"]}) == 2
    assert receivers["webhook"]["settings"] == {"url": "https://hooks.example.com/moby", "httpMethod": "POST"}
    assert receivers["email"]["settings"]["addresses"] == "ops@example.com;pm@example.com"

    [root] = doc["policies"]
    assert root["orgId"] == 1 and root["receiver"] == "MOBY"
    names = {p["name"] for p in doc["contactPoints"]}
    nodes = [root, *root["routes"]]
    for node in nodes:
        assert node["receiver"] in names
        assert set(node) <= {
            "orgId", "receiver", "group_by", "matchers", "object_matchers", "mute_time_intervals",
            "group_wait", "group_interval", "repeat_interval", "routes", "continue",
        }  # fmt: skip
        for name, op, _ in node.get("object_matchers", []):
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and op in ("=", "!=", "=~", "!~")
        for key in ("group_wait", "group_interval", "repeat_interval"):
            assert key not in node or DURATION.match(node[key])


def test_every_moby_rule_is_routed_to_the_contact_point(tmp_path: Path) -> None:
    """By the route on the label every MOBY rule carries, not only by the tree's catch-all root."""
    export(tmp_path, ExportSettings(contacts=CONTACTS))
    [root] = load_yaml(tmp_path / "alerting" / "notifications.yaml")["policies"]
    rules = [r for g in load_yaml(tmp_path / "alerting" / "moby.yaml")["groups"] for r in g["rules"]]
    assert len(rules) >= 4
    for rule in rules:
        assert rule["labels"]["team"] == "moby", rule["uid"]
        node = _route(root, rule["labels"])
        assert node is not root and node["receiver"] == "MOBY", rule["uid"]
    assert _route(root, {"team": "someone-else"}) is root  # the route is a real matcher


def test_a_rule_added_without_the_label_still_gets_it() -> None:
    from grafana_foundation_sdk.builders import alerting

    from moby.dashboards.alerts import to_file_format

    group = alerting.RuleGroup("extra").interval(60).with_rule(alerting.Rule("x").uid("x").labels({"a": "b"}))
    [rule] = to_file_format([group])["groups"][0]["rules"]
    assert rule["labels"] == {"a": "b", "team": "moby"}


def test_without_contacts_no_notifications_file_and_a_stale_one_goes(tmp_path: Path) -> None:
    export(tmp_path, ExportSettings(contacts=CONTACTS))
    assert (tmp_path / "alerting" / "notifications.yaml").exists()
    written = export(tmp_path, ExportSettings())
    assert not (tmp_path / "alerting" / "notifications.yaml").exists()
    assert all(p.name != "notifications.yaml" for p in written)
    with pytest.raises(ValueError, match="no contact configured"):
        notifications(Contacts())


def test_only_an_email_or_only_a_webhook(tmp_path: Path) -> None:
    for contacts, types in (
        (Contacts(emails=("a@example.com",)), ["email"]),
        (Contacts(webhook_url="$GRAFANA_MOBY_HOOK"), ["webhook"]),
    ):
        export(tmp_path, ExportSettings(contacts=contacts))
        doc = load_yaml(tmp_path / "alerting" / "notifications.yaml")
        assert [r["type"] for r in doc["contactPoints"][0]["receivers"]] == types
    # a $VAR is left for Grafana to expand from its environment (no secret in the file)
    assert doc["contactPoints"][0]["receivers"][0]["settings"]["url"] == "$GRAFANA_MOBY_HOOK"


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x?token=abc", "http://10.0.0.5:9000/alert", "${HOOK}", "$HOOK_URL"]
)
def test_good_webhook_urls(url: str) -> None:
    assert webhook_url(f" {url} ") == url


@pytest.mark.parametrize(
    "url",
    ["", "hooks.example.com", "ftp://x.org/a", "https://", "http://a b/c", "https://x:port/", "$1", "$(id)"],
)
def test_bad_webhook_urls(url: str) -> None:
    with pytest.raises(ValueError):
        webhook_url(url)


def test_email_addresses() -> None:
    assert email_addresses(["a@example.com, b@example.com", "a@example.com;c@x"]) == (
        "a@example.com",
        "b@example.com",
        "c@x",
    )
    for bad in (["bob"], ["a@b@c"], ["<a@b.c>"], ["a@-x.org"], ["a@x.org, @x.org"]):
        with pytest.raises(ValueError):
            email_addresses(bad)
    with pytest.raises(ValueError, match="at most"):
        email_addresses([",".join(f"u{i}@example.com" for i in range(51))])


def test_the_cli_writes_the_contact_point_from_options_or_environment(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "grafana",
            "export",
            str(tmp_path / "a"),
            "--alert-email",
            "ops@example.com",
            "--alert-email",
            "x@y.org",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = load_yaml(tmp_path / "a" / "alerting" / "notifications.yaml")
    assert doc["contactPoints"][0]["receivers"][0]["settings"]["addresses"] == "ops@example.com;x@y.org"
    assert "e-mail to 2 addresses" in result.output

    env = {
        "MOBY_ALERT_WEBHOOK_URL": "https://hooks.example.com/t?token=SECRET",
        "MOBY_ALERT_EMAIL": "a@b.org",
    }
    result = runner.invoke(app, ["grafana", "export", str(tmp_path / "b")], env=env)
    assert result.exit_code == 0, result.output
    doc = load_yaml(tmp_path / "b" / "alerting" / "notifications.yaml")
    assert {r["type"] for r in doc["contactPoints"][0]["receivers"]} == {"webhook", "email"}
    assert "SECRET" not in result.output  # the URL may hold a token: never printed


def test_the_cli_says_when_no_one_is_notified(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["grafana", "export", str(tmp_path)], env={})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no alert contact configured" in text and "notify no one" in text
    assert "--alert-webhook-url" in text and "MOBY_ALERT_EMAIL" in text
    assert not (tmp_path / "alerting" / "notifications.yaml").exists()


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--alert-email", "bob"], {}, "'bob' is not an e-mail address"),
        (["--alert-webhook-url", "hooks.example.com"], {}, "http:// or https://"),
        ([], {"MOBY_ALERT_WEBHOOK_URL": "ftp://x"}, "MOBY_ALERT_WEBHOOK_URL"),
    ],
)
def test_the_cli_refuses_bad_contacts(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = CliRunner().invoke(app, ["grafana", "export", str(tmp_path), *args], env=env)
    assert result.exit_code == 2
    assert named in " ".join(result.output.replace("│", " ").split())
    assert not (tmp_path / "alerting").exists()  # nothing written
