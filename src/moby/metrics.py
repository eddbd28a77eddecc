"""The Prometheus metrics every stage reports, in one registry per process.

Names follow Prometheus conventions (``_total`` counters, base units). A fresh
:class:`Metrics` is made per engine so tests can run several in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "moby_messages_received", "MQTT messages received", ["kind"], registry=r
        )
        self.readings_accepted = Counter(
            "moby_readings_accepted", "Readings validated and durably queued", registry=r
        )
        self.messages_rejected = Counter(
            "moby_messages_rejected", "Messages dead-lettered, by reason", ["reason"], registry=r
        )
        self.dead_letters_evicted = Gauge(
            "moby_dead_letters_evicted",
            "Dead letters evicted from the bounded store (ever)",
            registry=r,
        )
        self.dead_letters_held = Gauge("moby_dead_letters", "Dead letters held in the store", registry=r)
        self.queue_points = Gauge(
            "moby_queue_depth_points", "Points waiting in the durable queue", registry=r
        )
        self.queue_bytes = Gauge("moby_queue_depth_bytes", "Bytes held by the durable queue", registry=r)
        self.queue_full = Gauge(
            "moby_queue_full",
            "1 while the queue is at its byte bound and acks are held back",
            registry=r,
        )
        self.commit_messages = Histogram(
            "moby_group_commit_messages",
            "Messages per durable group commit",
            registry=r,
            buckets=_BATCH_BUCKETS,
        )
        self.batch_points = Histogram(
            "moby_write_batch_points",
            "Points per InfluxDB write",
            registry=r,
            buckets=_BATCH_BUCKETS,
        )
        self.write_latency = Histogram(
            "moby_write_latency_seconds",
            "InfluxDB write request latency",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.write_errors = Counter(
            "moby_write_errors", "Failed InfluxDB write attempts, by kind", ["kind"], registry=r
        )
        self.points_written = Counter("moby_points_written", "Points InfluxDB confirmed", registry=r)
        self.e2e_lag = Histogram(
            "moby_end_to_end_lag_seconds",
            "From a message's receipt by the backend to InfluxDB's confirmation",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.reading_age = Histogram(
            "moby_reading_age_seconds",
            "From a reading's own timestamp to InfluxDB's confirmation (includes edge buffering)",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.mqtt_connected = Gauge("moby_mqtt_connected", "1 while connected to the broker", registry=r)
        self.mqtt_reconnects = Counter("moby_mqtt_reconnects", "Broker reconnections", registry=r)
        self.mqtt_connect_failures = Counter(
            "moby_mqtt_connect_failures",
            "Failed attempts to connect or subscribe, by kind (connect_failed, connect_refused_<code>, "
            "subscribe_refused_<code>, ...)",
            ["kind"],
            registry=r,
        )
        self.task_restarts = Counter(
            "moby_task_restarts",
            "Long-running tasks restarted after an unexpected exception, by task",
            ["task"],
            registry=r,
        )
        self.influx_up = Gauge("moby_influx_up", "1 when the last InfluxDB contact succeeded", registry=r)
        self.sensors = Gauge("moby_sensors", "Sensors known to the backend", registry=r)
        self.cardinality_rejected = Counter(
            "moby_cardinality_rejected",
            "Messages dead-lettered (cardinality_limit) for passing a budget: sensor_type, "
            "fields_per_measurement, sensors, sensors_per_factory, factories",
            ["limit"],
            registry=r,
        )
        self.storage_error = Gauge(
            "moby_storage_error",
            "1 while the data dir refuses writes (disk full, I/O error): nothing is acknowledged",
            registry=r,
        )

        # --- query layer (the InfluxQL proxy) ------------------------------------------------
        self.query_requests = Counter(
            "moby_query_requests",
            "InfluxQL proxy /query requests, by outcome (hit, miss, coalesced, uncacheable, "
            "bypass, refused, unparsed, unauthorized, bad_request, throttled, too_large, timeout, "
            "upstream_error)",
            ["outcome"],
            registry=r,
        )
        self.query_cache_hits = Counter(
            "moby_query_cache_hits", "Proxy answers served from the cache (incl. coalesced)", registry=r
        )
        self.query_cache_misses = Counter(
            "moby_query_cache_misses", "Proxy answers that needed a query to InfluxDB", registry=r
        )
        self.query_cache_bytes = Gauge("moby_query_cache_bytes", "Bytes held by the proxy cache", registry=r)
        self.query_cache_entries = Gauge(
            "moby_query_cache_entries", "Answers held by the proxy cache", registry=r
        )
        self.query_cache_evictions = Gauge(
            "moby_query_cache_evictions", "Answers evicted to keep the byte bound (ever)", registry=r
        )
        self.query_delta_bytes = Gauge(
            "moby_query_delta_bytes", "Bytes of complete buckets held by the delta cache", registry=r
        )
        self.query_delta_rows = Counter(
            "moby_query_delta_rows",
            "Rows of delta-cached answers, by where they came from (cache, influxdb)",
            ["source"],
            registry=r,
        )
        self.query_upstream = Counter(
            "moby_query_upstream_requests", "Requests the proxy sent to InfluxDB /query", registry=r
        )
        self.query_upstream_inflight = Gauge(
            "moby_query_upstream_inflight", "Proxy queries running in InfluxDB now", registry=r
        )
        self.query_upstream_waiting = Gauge(
            "moby_query_upstream_waiting",
            "Proxy queries waiting for one of their client's slots (MOBY_PROXY_MAX_CONCURRENT_PER_CLIENT)",
            registry=r,
        )
        self.query_routed = Counter(
            "moby_query_routed",
            'Statements naming "auto", by the retention policy chosen',
            ["policy"],
            registry=r,
        )
        self.query_latency = Histogram(
            "moby_query_latency_seconds",
            "Proxy /query latency, by whether InfluxDB was asked",
            ["cache"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
