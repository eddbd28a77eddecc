"""The InfluxQL target of Grafana's stock InfluxDB data source, and the query fragments we share.

grafana-foundation-sdk has builders for Prometheus, Loki and others but none for InfluxDB, so
the target is a small :class:`~grafana_foundation_sdk.cog.variants.Dataquery` of our own with
the fields the InfluxDB data source stores for a raw (hand-written) InfluxQL query: ``refId``,
``query``, ``rawQuery: true`` and ``resultFormat`` (``time_series`` or ``table``).

Every query is written for Grafana's macro substitution: ``$timeFilter``, ``$__interval`` and
the template variables ``$factory_id`` / ``$sensor_id`` in the multi-value regex form
``=~ /^$var$/`` (Grafana expands a multi-value selection to ``(a|b)``, "All" to every value).
"""

from __future__ import annotations

from typing import Final, Literal

from grafana_foundation_sdk.builders.dashboard import QueryVariable
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

DATASOURCE_UID: Final = "moby"  # the MOBY InfluxQL proxy (http://<api>/influx)
DIRECT_DATASOURCE_UID: Final = "moby-influxdb"  # InfluxDB itself, for ad-hoc use
DATASOURCE: Final = DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)

# The pseudo retention policy the proxy resolves to raw / rollup_1m / rollup_1h by zoom.
AUTO: Final = '"auto"'
ROLLUP: Final = '"rollup_1m"'
RAW: Final = '"raw"'

FACTORY: Final = '"factory_id" =~ /^$factory_id$/'
SENSOR: Final = '"sensor_id" =~ /^$sensor_id$/'

ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    def __init__(self, ref_id: str, query: str, result_format: ResultFormat = "time_series") -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """``InfluxQL("SELECT ...")`` as a panel target (refId A unless given)."""

    def __init__(self, query: str, *, ref_id: str = "A", result_format: ResultFormat = "time_series") -> None:
        self._query = InfluxQLQuery(ref_id, query, result_format)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def tag_variable(name: str, label: str, query: str, *, multi: bool = True) -> QueryVariable:
    """A variable filled by an InfluxQL ``SHOW TAG VALUES`` query, refreshed with the time range."""
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(multi)
        .include_all(multi)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def factory_variable() -> QueryVariable:
    return tag_variable("factory_id", "Factory", 'SHOW TAG VALUES WITH KEY = "factory_id"')


def sensor_variable(measurement: str | None = None) -> QueryVariable:
    source = f' FROM "{measurement}"' if measurement else ""
    return tag_variable(
        "sensor_id", "Sensor", f'SHOW TAG VALUES{source} WITH KEY = "sensor_id" WHERE {FACTORY}'
    )
