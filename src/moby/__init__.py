"""MOBY: an industrial sensor pipeline — sensors → MQTT → ingest → InfluxDB → dashboards."""

__version__ = "0.1.0"
