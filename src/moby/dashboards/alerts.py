"""Alert rules, as a Grafana unified-alerting *file provisioning* document (``apiVersion: 1``).

Each rule is query A (InfluxQL through the MOBY data source, one series per sensor or backend)
→ B, a server-side ``reduce`` to one number per series → C, a ``threshold`` on it, which is the
rule's condition; ``for`` is how long C must hold before the alert fires. Rules are built with
grafana-foundation-sdk's alerting builders; :func:`to_file_format` turns its API-shaped rules
into the file format (``groups: [{orgId, name, folder, interval, rules}]``).

Alert queries use explicit ``GROUP BY time(1m)`` and name the policy: the alert engine
substitutes ``$timeFilter`` but has no dashboard to take ``$__interval`` from, and freshness
alerts must read ``raw`` (a rollup lags by up to the continuous query's interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange
from grafana_foundation_sdk.models.expr import (
    ExprTypeThresholdConditions,
    ExprTypeThresholdConditionsEvaluator,
)

from moby.dashboards.influxql import AUTO, DATASOURCE_UID, RAW, InfluxQL
from moby.edge.features import ZONE_LIMITS_MM_S, MachineClass

FOLDER: Final = "MOBY"
# Every MOBY rule carries this label; the exported notification policy routes on it
# (moby.dashboards.notify), so a rule added later is notified without touching the policy.
ROUTE_LABEL: Final = ("team", "moby")
EXPRESSIONS_UID: Final = "__expr__"  # Grafana's server-side expressions pseudo data source
_DROP_FOR_FILES: Final = ("folderUID", "orgID", "ruleGroup", "id", "provenance", "updated")


@dataclass(frozen=True)
class AlertSettings:
    machine_class: MachineClass = MachineClass.CLASS_II
    zone_for: str = "5m"  # RMS velocity in zone C/D this long
    offline_for: str = "5m"  # a sensor reported offline this long
    dead_letters_per_min: float = 10.0
    dead_letters_for: str = "5m"
    storage_error_for: str = "1m"  # the data dir refusing writes this long


def _rule(
    uid: str,
    title: str,
    query: str,
    *,
    reducer: str,
    op: str,
    threshold: float,
    for_: str,
    summary: str,
    labels: dict[str, str],
    lookback_s: int = 600,
    no_data: str = "NoData",
) -> alerting.Rule:
    condition = ExprTypeThresholdConditions(evaluator=ExprTypeThresholdConditionsEvaluator([threshold], op))  # type: ignore[arg-type]
    return (
        alerting.Rule(title)
        .uid(uid)
        .condition("C")
        .with_query(
            alerting.Query("A")
            .datasource_uid(DATASOURCE_UID)
            .relative_time_range(RelativeTimeRange(from_val=lookback_s, to=0))
            .model(InfluxQL(query, ref_id="A"))
        )
        .with_query(
            alerting.Query("B")
            .datasource_uid(EXPRESSIONS_UID)
            .model(expr.TypeReduce().ref_id("B").expression("A").reducer(reducer))  # type: ignore[arg-type]
        )
        .with_query(
            alerting.Query("C")
            .datasource_uid(EXPRESSIONS_UID)
            .model(expr.TypeThreshold().ref_id("C").expression("B").conditions([_Fixed(condition)]))
        )
        .for_val(for_)
        .no_data_state(no_data)  # type: ignore[arg-type]
        .exec_err_state("Error")
        .annotations({"summary": summary})
        .labels({**labels, ROUTE_LABEL[0]: ROUTE_LABEL[1]})
    )


class _Fixed(cogbuilder.Builder[ExprTypeThresholdConditions]):
    """A builder that returns an already-made model (the SDK has none for threshold conditions)."""

    def __init__(self, model: ExprTypeThresholdConditions) -> None:
        self._model = model

    def build(self) -> ExprTypeThresholdConditions:
        return self._model


def rule_groups(settings: AlertSettings = AlertSettings()) -> list[alerting.RuleGroup]:
    mc = settings.machine_class
    _, bc, cd = ZONE_LIMITS_MM_S[mc]  # zone B is normal operation: no alert
    velocity = (
        f'SELECT mean("rms_velocity") FROM {AUTO}."vibration" WHERE $timeFilter '
        'GROUP BY time(1m), "factory_id", "sensor_id", "machine_id"'
    )
    vibration = (
        alerting.RuleGroup("vibration")
        .interval(60)
        .with_rule(
            _rule(
                "moby-vibration-zone-c",
                "Vibration in ISO 10816 zone C or worse",
                velocity,
                reducer="mean",
                op="gt",
                threshold=bc,
                for_=settings.zone_for,
                summary=f"{{{{ $labels.sensor_id }}}}: RMS velocity above {bc} mm/s ({mc.value} B/C limit): "
                "restricted operation",
                labels={"severity": "warning"},
            )
        )
        .with_rule(
            _rule(
                "moby-vibration-zone-d",
                "Vibration in ISO 10816 zone D",
                velocity,
                reducer="mean",
                op="gt",
                threshold=cd,
                for_=settings.zone_for,
                summary=f"{{{{ $labels.sensor_id }}}}: RMS velocity above {cd} mm/s ({mc.value} C/D limit): "
                "damage likely",
                labels={"severity": "critical"},
            )
        )
    )
    fleet = (
        alerting.RuleGroup("fleet")
        .interval(60)
        .with_rule(
            _rule(
                "moby-sensor-offline",
                "Sensor offline or silent",
                'SELECT last("online") FROM "raw"."moby_sensor_status" WHERE $timeFilter '
                'GROUP BY time(1m), "factory_id", "sensor_id"',
                reducer="last",
                op="lt",
                threshold=0.5,
                for_=settings.offline_for,
                summary="{{ $labels.factory_id }}/{{ $labels.sensor_id }} is offline (Last Will, "
                "offline status, or no message for 5 minutes)",
                labels={"severity": "warning"},
                # No status points at all means no backend is reporting: that is an alert too.
                no_data="Alerting",
            )
        )
        .with_rule(
            _rule(
                "moby-dead-letters",
                "Dead-letter rate",
                # Rejections in the last 5 minutes: the sum of the counter's increases, which
                # survives a backend restart (the counter starting again at 0).
                'SELECT sum("added") FROM (SELECT non_negative_difference("rejected") AS "added" '
                f'FROM {RAW}."moby_internal" WHERE $timeFilter GROUP BY "client_id") GROUP BY "client_id"',
                reducer="last",
                op="gt",
                threshold=settings.dead_letters_per_min * 5,
                for_=settings.dead_letters_for,
                summary="{{ $labels.client_id }} dead-lettered more than "
                f"{settings.dead_letters_per_min:g} messages per minute over 5 minutes: see /api/v1/dlq",
                labels={"severity": "warning"},
                lookback_s=300,
            )
        )
    )
    backend = (
        alerting.RuleGroup("backend")
        .interval(60)
        .with_rule(
            _rule(
                "moby-cardinality-limit",
                "Messages refused by a cardinality budget",
                # Refusals in the last 5 minutes, as for the dead-letter rate.
                'SELECT sum("added") FROM (SELECT non_negative_difference("cardinality_rejected") AS "added" '
                f'FROM {RAW}."moby_internal" WHERE $timeFilter GROUP BY "client_id") GROUP BY "client_id"',
                reducer="last",
                op="gt",
                threshold=0,
                for_="0s",
                summary="{{ $labels.client_id }} dead-lettered messages for an unconfigured sensor_type or "
                "past a budget of fields, sensors or factories (cardinality_limit): a misconfigured "
                "sensor or a publisher making up names; see /api/v1/dlq?reason=cardinality_limit",
                labels={"severity": "warning"},
                lookback_s=300,
                no_data="OK",
            )
        )
        .with_rule(
            _rule(
                "moby-storage-error",
                "Backend data dir refuses writes",
                f'SELECT max("storage_error") FROM {RAW}."moby_internal" WHERE $timeFilter '
                'GROUP BY time(1m), "client_id"',
                reducer="max",
                op="gt",
                threshold=0.5,
                for_=settings.storage_error_for,
                summary="{{ $labels.client_id }} cannot write to its data dir (disk full or I/O error): "
                "nothing is acknowledged to the broker, which holds the backlog; /readyz says why",
                labels={"severity": "critical"},
                lookback_s=120,
                no_data="OK",
            )
        )
    )
    return [vibration, fleet, backend]


def to_file_format(
    groups: list[alerting.RuleGroup], *, org_id: int = 1, folder: str = FOLDER
) -> dict[str, Any]:
    """The provisioning file document for ``groups`` (JSON-ready dicts)."""
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    out = []
    for rule_group in groups:
        built = json.loads(json.dumps(rule_group.build(), cls=JSONEncoder))
        rules = [{k: v for k, v in rule.items() if k not in _DROP_FOR_FILES} for rule in built["rules"]]
        for rule in rules:  # the notification policy's route label, whoever built the rule
            rule["labels"] = {**(rule.get("labels") or {}), ROUTE_LABEL[0]: ROUTE_LABEL[1]}
        out.append(
            {
                "orgId": org_id,
                "name": built["title"],
                "folder": folder,
                "interval": f"{built['interval']}s",
                "rules": rules,
            }
        )
    return {"apiVersion": 1, "groups": out}
