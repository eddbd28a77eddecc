"""The backend process: ingest (MQTT → durable queue) and the InfluxDB writer, wired together.

This is the composition root of ``moby serve``; the HTTP API (:mod:`moby.api`) serves it.
Every long-running task (subscriber, group commit, writer, bootstrap, re-roll, self-metrics)
runs under a :class:`~moby.supervisor.Supervisor`: an unexpected exception is logged with the
task's name, counted in ``moby_task_restarts_total{task}``, and the task restarted after a
backoff; ``/readyz`` is false while one is down (:meth:`Engine.tasks_down`). A stop that fails
(a step raising, a task failing while stopping) is recorded in :attr:`Engine.stop_failed`, so
``moby serve`` exits non-zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import structlog
from pydantic import SecretStr

from moby.config import Settings
from moby.ingest.committer import GroupCommitter
from moby.ingest.process import Processor
from moby.ingest.queue import DeadLetterReader, DurableQueue
from moby.ingest.registry import Registry, SensorRecord
from moby.ingest.subscriber import Subscriber
from moby.metrics import Metrics
from moby.net import Backoff
from moby.outage import Outage
from moby.store.bootstrap import Bootstrap, InfluxUser
from moby.store.influx import InfluxClient, InfluxError, RetryableError
from moby.store.selfmetrics import SelfMetricsReporter
from moby.store.writer import Writer
from moby.supervisor import Supervisor

log = structlog.get_logger(__name__)

ROLLUP_RECONCILE_S = 30.0
REROLL_EVERY_S = 900.0


def _user(name: str | None, password: SecretStr | None) -> InfluxUser | None:
    return InfluxUser(name, password.get_secret_value() if password else "") if name else None


class Engine:
    def __init__(self, settings: Settings) -> None:
        s = self.settings = settings
        self.metrics = Metrics()
        self.queue = DurableQueue(
            s.queue_path,
            max_bytes=s.queue_max_bytes,
            dlq_max_items=s.dlq_max_items,
            dlq_max_bytes=s.dlq_max_bytes,
            sync=s.queue_sync,
        )
        self.dead_letters = DeadLetterReader(s.queue_path)
        self.registry = Registry()
        self.influx = InfluxClient(
            s.influx_url,
            s.influx_db,
            username=s.influx_username,
            password=s.influx_password.get_secret_value() if s.influx_password else None,
            timeout_s=s.write_timeout_s,
        )
        # With an InfluxDB administrator configured, the bootstrap makes the writer and the
        # query proxy's reader separate users (docs/SECURITY.md).
        self.influx_admin = (
            InfluxClient(
                s.influx_url,
                s.influx_db,
                username=s.influx_admin_username,
                password=s.influx_admin_password.get_secret_value() if s.influx_admin_password else None,
                timeout_s=s.write_timeout_s,
            )
            if s.influx_admin_username
            else None
        )
        self.bootstrap = Bootstrap(
            self.influx,
            raw_retention=s.raw_retention,
            rollup_retention=s.rollup_retention,
            rollup_1h_retention=s.rollup_1h_retention,
            admin=self.influx_admin,
            writer=_user(s.influx_username, s.influx_password),
            reader=_user(s.proxy_influx_username, s.proxy_influx_password),
            sensor_types=s.sensor_types,
        )
        # InfluxDB away: the writer and the bootstrap loop tell one story in the log (moby.outage).
        self.influx_outage = Outage(
            "InfluxDB",
            s.influx_url,
            logger=log,
            details=lambda: {"points_waiting": self.queue.depth_points},
        )
        # Bootstrap statements refused by a reachable InfluxDB (auth, privileges): a problem of its own.
        self.bootstrap_outage = Outage("InfluxDB bootstrap", s.influx_url, logger=log)
        self.self_metrics: SelfMetricsReporter | None = None
        self._bootstrapped = asyncio.Event()
        self.supervisor = Supervisor(on_restart=lambda task: self.metrics.task_restarts.labels(task).inc())
        self._influx_ok = (0.0, False)
        self.stop_failed = False

    async def start(self) -> None:
        s = self.settings
        await self.queue.open()
        self.registry = Registry(
            [SensorRecord.from_dict(d) for d in await self.queue.load_sensors()],
            fields=await self.queue.load_fields(),
            max_sensors=s.max_sensors,
            max_factories=s.max_factories,
            max_sensors_per_factory=s.max_sensors_per_factory,
            max_fields_per_measurement=s.max_fields_per_measurement,
        )
        self.metrics.sensors.set_function(lambda: self.registry.sensor_count)
        self.processor = Processor(
            self.registry,
            max_age_s=s.max_age_s,
            max_future_s=s.max_future_s,
            sensor_types=s.sensor_types,
            metrics=self.metrics,
        )
        self.committer = GroupCommitter(
            self.queue,
            self.registry,
            self.metrics,
            max_messages=s.group_commit_max_messages,
            interval_s=s.group_commit_interval_s,
        )
        self.writer = Writer(
            self.queue,
            self.influx,
            self.metrics,
            new_data=self.committer.committed,
            batch_max_points=s.batch_max_points,
            batch_min_points=s.batch_min_points,
            batch_linger_s=s.batch_linger_s,
            concurrency=s.write_concurrency,
            retry_initial_s=s.retry_initial_s,
            retry_max_s=s.retry_max_s,
            on_missing_database=self.bootstrap.run,
            outage=self.influx_outage,
        )
        self.subscriber = Subscriber(s, self.processor, self.committer, self.metrics)
        self.metrics.queue_points.set(self.queue.depth_points)
        self.metrics.queue_bytes.set(self.queue.depth_bytes)
        sup = self.supervisor
        sup.watch("committer", self.committer.start)
        sup.run("bootstrap", self._bootstrap_loop)
        if s.rollup_reroll_hours:
            sup.run("reroll", self._reroll_loop)
        sup.watch("writer", self.writer.start)
        sup.watch("subscriber", self.subscriber.start)
        if s.internal_metrics_interval_s > 0:
            # A client of its own with a short timeout: a slow InfluxDB delays only this report.
            own_client = InfluxClient(
                s.influx_url,
                s.influx_db,
                username=s.influx_username,
                password=s.influx_password.get_secret_value() if s.influx_password else None,
                timeout_s=min(5.0, s.internal_metrics_interval_s),
            )
            self.self_metrics = SelfMetricsReporter(
                self.metrics.registry,
                self.registry,
                own_client,
                client_id=s.mqtt_client_id,
                interval_s=s.internal_metrics_interval_s,
                before_collect=self.subscriber.flush_counts,
            )
            sup.watch("self-metrics", self.self_metrics.start)
        log.info(
            "engine started",
            queued_points=self.queue.depth_points,
            sensors=len(self.registry),
            **s.safe_summary(),
        )

    async def _bootstrap_loop(self) -> None:
        """Bootstrap once InfluxDB answers, then keep the rollup queries in step with new fields."""
        backoff = Backoff(0.5, 30.0)
        while True:
            started = time.monotonic()
            try:
                if not self._bootstrapped.is_set():
                    await self.bootstrap.run()
                    self._bootstrapped.set()
                    log.info("InfluxDB bootstrapped", database=self.settings.influx_db)
                else:
                    await self.bootstrap.reconcile_rollups()
            except (InfluxError, OSError) as exc:
                if isinstance(exc, RetryableError | OSError):  # unreachable, 5xx: InfluxDB is away
                    self.influx_outage.failed(exc, reason="retryable", started=started)
                else:
                    self.bootstrap_outage.failed(exc, started=started)
                await asyncio.sleep(backoff.next())
                continue
            self.influx_outage.succeeded()
            self.bootstrap_outage.succeeded()
            backoff.reset()
            await asyncio.sleep(ROLLUP_RECONCILE_S)

    async def _reroll_loop(self) -> None:
        """Every 15 minutes, roll up the recent hours again: late edge backfill reaches the rollups."""
        hours = self.settings.rollup_reroll_hours
        while True:
            await asyncio.sleep(REROLL_EVERY_S)
            if not self._bootstrapped.is_set():
                continue
            now_ms = int(time.time() * 1000)
            try:
                await self.bootstrap.backfill(now_ms - hours * 3_600_000, now_ms)
            except (InfluxError, OSError) as exc:
                log.warning("rollup re-roll failed", error=str(exc)[:200])

    async def influx_reachable(self) -> bool:
        """InfluxDB answered /ping within the last second, and the writer's last write did not fail."""
        checked_at, ok = self._influx_ok
        if time.monotonic() - checked_at > 1.0:
            ok = await self.influx.ping()
            self._influx_ok = (time.monotonic(), ok)
        return ok and self.writer.healthy

    def tasks_down(self) -> list[str]:
        """The supervised tasks that failed and wait for their restart (readiness is false meanwhile)."""
        return self.supervisor.down

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        """Stop taking messages, make pending ones durable, flush the queue if InfluxDB is up.

        Each step runs even if an earlier one failed; a failure is logged and sets
        :attr:`stop_failed` (``moby serve`` then exits non-zero). Rows still queued because
        InfluxDB did not take them in time are not a failure: they are on disk for the next start.
        """
        self.supervisor.stopping()
        errors: list[BaseException] = []

        async def step(what: str, action: Awaitable[object]) -> object:
            try:
                return await action
            except Exception as exc:
                errors.append(exc)
                log.error("stopping failed", step=what, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                return None

        await step("disconnect from the broker", self.subscriber.stop())
        if self.self_metrics is not None:
            await step("stop the self-metrics", self.self_metrics.stop())
        await step("commit what was received", self.committer.close())
        flushed = await step("flush the queue to InfluxDB", self.writer.stop(flush_timeout_s))
        for task, exc in await self.supervisor.close():
            if not any(exc is seen for seen in errors):
                errors.append(exc)
                log.error(
                    "a task failed while stopping",
                    task=task,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
        await step("close the queue", self.queue.close())
        await step("close the InfluxDB client", self.influx.close())
        if self.influx_admin is not None:
            await step("close the InfluxDB admin client", self.influx_admin.close())
        self.stop_failed = bool(errors)
        log.info(
            "engine stopped",
            flushed=flushed,
            left_in_queue=self.queue.depth_points,
            failed=len(errors) or None,
        )
