"""The stats sampler: CPU and memory of every live container, every BERTH_STATS_INTERVAL.

`manage.py sample_stats` runs `Sampler.run()`; the tests drive its steps
(`tick`, `roll_up`, `prune`, `reconcile`) one at a time.

A tick never overlaps the next, and one slow container never delays the others:

- one thread runs the loop; a tick waits for its stats calls at most
  BERTH_STATS_DEADLINE seconds, then writes the readings it has: a call still
  running is abandoned for this tick (`late`), and its container is skipped
  by the next ticks until that call returns (runtime.read_stats), so at most
  one thread per container lingers;
- each stats call has a timeout (BERTH_STATS_TIMEOUT: the interval, at least
  5 s), which ends a lingering call on an engine that hangs;
- the next tick starts at the next slot of the interval's grid after the
  previous one ended: slots missed while a tick ran long are skipped and
  logged, never caught up in a burst.

After each tick the minutes that are over are rolled up (and the hours whose
minutes all are) into StatsRollup rows (workloads/stats_rollups.py), which
the long history windows read; pruning keeps each table within its retention.

CPU percent is computed the way `docker stats` computes it — container CPU
delta ÷ system CPU delta × online CPUs × 100 — between the reading of this
tick and the previous reading the sampler kept for that container. A one-shot
reading carries no previous values, so a container's first reading (and the
first after its counters restart) only primes the next one and is not written.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from lib import runtime
from workloads import stats_rollups
from workloads.models import Container, ContainerStatsSample, DeployRecord, StatsRollup, Workload

logger = logging.getLogger(__name__)

PRUNE_BATCH = 5000
RECONCILE_SECONDS = 60
PRUNE_SECONDS = 3600
UNFINISHED = (DeployRecord.Outcome.QUEUED, DeployRecord.Outcome.RUNNING)


def cpu_percent(previous: runtime.StatsReading, current: runtime.StatsReading) -> float | None:
    """`docker stats`' CPU percent between two readings; None when they cannot be compared.

    A counter that went backwards (the container restarted) or a system
    counter that did not move (the same reading twice) gives None: the caller
    keeps `current` as the new baseline instead.
    """
    cpu_delta = current.cpu_total - previous.cpu_total
    system_delta = current.system_cpu - previous.system_cpu
    if cpu_delta < 0 or system_delta <= 0:
        return None
    return cpu_delta / system_delta * current.online_cpus * 100.0


@dataclass
class TickResult:
    at: datetime
    written: int = 0
    primed: int = 0  # first readings, kept as the baseline for the next tick
    missing: int = 0  # gone from the engine, or not running
    failed: int = 0  # the engine answered with an error for that container
    late: int = 0  # no answer by the deadline (or still none since an earlier tick)
    engine_unreachable: bool = False


@dataclass
class ReconcileResult:
    marked_removed: list[str] = field(default_factory=list)
    indexed: list[str] = field(default_factory=list)


class Sampler:
    """The sampler's state (the previous reading per container) and its steps."""

    def __init__(
        self, *, interval: int | None = None, retention: int | None = None,
        workers: int | None = None, deadline: float | None = None,
        prune_batch: int = PRUNE_BATCH, clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval or settings.BERTH_STATS_INTERVAL
        self.retention = retention or settings.BERTH_STATS_RETENTION
        self.workers = workers or settings.BERTH_STATS_WORKERS
        self.deadline = deadline or settings.BERTH_STATS_DEADLINE
        self.retentions = {
            stats_rollups.MINUTE: settings.BERTH_STATS_MINUTE_RETENTION,
            stats_rollups.HOUR: settings.BERTH_STATS_HOUR_RETENTION,
        }
        self.prune_batch = prune_batch
        # Seconds since the epoch; run() waits on `stop` alone, so a test
        # that passes a clock and a stop of its own runs the loop without sleeping.
        self.clock = clock
        self.previous: dict[str, runtime.StatsReading] = {}
        self.late: set[str] = set()
        self.engine_down = False

    # --- the steps -----------------------------------------------------------

    def tick(self, at: datetime | None = None) -> TickResult:
        """Read every live indexed container once and write the samples in bulk.

        Every sample of a tick carries `at` (default: now). An unreachable
        engine is logged once per outage and the tick writes nothing.
        """
        at = at or timezone.now()
        result = TickResult(at=at)
        live = dict(Container.objects.live().values_list("docker_id", "pk"))
        if not live:
            self.previous.clear()
            return result
        try:
            batch = runtime.read_stats(list(live), workers=self.workers, deadline=self.deadline)
        except runtime.EngineUnreachable:
            self._engine_lost()
            result.engine_unreachable = True
            return result
        self._engine_back()
        for docker_id, error in batch.failed.items():
            logger.warning("stats of container %s failed: %s", docker_id[:12], error)
        newly_late = sorted(batch.late - self.late)  # once, not every tick it stays late
        if newly_late:
            logger.warning(
                "stats of %d container(s) not answered within %s s, skipped until they are: %s",
                len(newly_late), self.deadline, " ".join(c[:12] for c in newly_late[:10]),
            )
        self.late = batch.late
        result.failed, result.missing = len(batch.failed), len(batch.missing)
        result.late = len(batch.late)
        samples = []
        for docker_id, reading in batch.readings.items():
            previous = self.previous.get(docker_id)
            cpu = cpu_percent(previous, reading) if previous else None
            if cpu is None:
                result.primed += 1
                continue
            samples.append(ContainerStatsSample(
                container_id=live[docker_id], timestamp=at, cpu_percent=cpu,
                memory_bytes=reading.memory_bytes, memory_limit=reading.memory_limit,
            ))
        ContainerStatsSample.objects.bulk_create(samples)
        result.written = len(samples)
        # This tick's readings are the next one's baselines; a container that
        # was not read has none (an old baseline would average over the gap).
        self.previous = dict(batch.readings)
        return result

    def roll_up(self, now: datetime | None = None) -> tuple[int, int]:
        """Roll the minutes over before `now` (and the hours) up; the rows written of each."""
        return stats_rollups.roll_up(
            now=now or timezone.now(),
            minute_retention=self.retentions[stats_rollups.MINUTE],
            hour_retention=self.retentions[stats_rollups.HOUR],
        )

    def prune(self, now: datetime | None = None) -> int:
        """Delete samples and rollups older than their retention, PRUNE_BATCH rows per statement.

        Batches keep each delete's transaction (and the lock it holds on a
        SQLite database the web server also writes to) short. Returns the
        samples deleted.
        """
        now = now or timezone.now()
        deleted = self._prune(ContainerStatsSample.objects.filter(
            timestamp__lt=now - timedelta(seconds=self.retention)))
        for resolution, retention in self.retentions.items():
            self._prune(StatsRollup.objects.filter(
                resolution=resolution, start__lt=now - timedelta(seconds=retention)))
        return deleted

    def _prune(self, old) -> int:
        old, deleted = old.order_by(), 0
        while True:
            batch = list(old.values_list("pk", flat=True)[: self.prune_batch])
            if batch:
                deleted += old.model.objects.filter(pk__in=batch).delete()[0]
            if len(batch) < self.prune_batch:
                return deleted

    def reconcile(self, now: datetime | None = None) -> ReconcileResult:
        """Bring the Container index in line with the engine's labelled containers.

        An indexed container the engine no longer has is marked removed. A
        container of this installation with a workload label that the index
        lacks is added — unless the deploy that created it is still running:
        that deploy indexes its own containers when it finishes.
        """
        now = now or timezone.now()
        # The index is read before the engine is asked: a container indexed
        # after this read was created on the engine before it, so it cannot be
        # taken for a vanished one.
        indexed = dict(Container.objects.live().values_list("docker_id", "pk"))
        on_engine = {c.id: c for c in runtime.list_instance_containers()}
        result = ReconcileResult()
        gone = {docker_id: pk for docker_id, pk in indexed.items() if docker_id not in on_engine}
        if gone:
            Container.objects.filter(pk__in=gone.values(), removed__isnull=True).update(
                removed=now
            )
            result.marked_removed = sorted(gone)
        result.indexed = self._index_unknown(list(on_engine.values()))
        return result

    def _index_unknown(self, containers: list[runtime.ContainerInfo]) -> list[str]:
        known = set(
            Container.objects.filter(docker_id__in=[c.id for c in containers])
            .values_list("docker_id", flat=True)
        )
        unknown = [c for c in containers if c.id not in known]
        if not unknown:
            return []
        workloads = set(
            Workload.objects.filter(pk__in={_label_int(c, runtime.WORKLOAD_LABEL) for c in unknown})
            .values_list("pk", flat=True)
        )
        running_deploys = set(
            DeployRecord.objects.filter(
                pk__in={_label_int(c, runtime.DEPLOY_LABEL) for c in unknown},
                outcome__in=UNFINISHED,
            ).values_list("pk", flat=True)
        )
        rows = [
            Container(
                workload_id=_label_int(c, runtime.WORKLOAD_LABEL),
                docker_id=c.id,
                name=c.name[:255],
                replica=_label_int(c, runtime.REPLICA_LABEL) or 1,
                image_reference=c.image[:512],
                created=datetime.fromtimestamp(c.created, UTC) if c.created else timezone.now(),
            )
            for c in unknown
            if _label_int(c, runtime.WORKLOAD_LABEL) in workloads
            and _label_int(c, runtime.DEPLOY_LABEL) not in running_deploys
        ]
        # ignore_conflicts: a deploy that finished meanwhile may have indexed one of them.
        Container.objects.bulk_create(rows, ignore_conflicts=True)
        return sorted(row.docker_id for row in rows)

    # --- the loop --------------------------------------------------------------

    def next_slot(self, now: float) -> float:
        """The next multiple of the interval after `now` (seconds since the epoch)."""
        return (math.floor(now / self.interval) + 1) * self.interval

    def run(self, stop: threading.Event) -> None:
        """Tick on the interval's grid until `stop` is set; reconcile and prune now and then.

        `stop` is checked between steps: a tick in progress finishes (and
        writes its samples) before run() returns.
        """
        reconcile_every = max(1, round(RECONCILE_SECONDS / self.interval))
        prune_every = max(1, round(PRUNE_SECONDS / self.interval))
        self._guarded(self.reconcile)
        self._guarded(self.prune)
        ticks, last_slot = 0, None
        while True:
            slot = self.next_slot(self.clock())
            if last_slot is not None and slot - last_slot > self.interval:
                skipped = round((slot - last_slot) / self.interval) - 1
                logger.warning("the last tick overran the interval: skipped %d tick(s)", skipped)
            if stop.wait(max(0.0, slot - self.clock())):
                return
            last_slot = slot
            close_old_connections()
            at = datetime.fromtimestamp(slot, UTC)
            self._guarded(self.tick, at)
            # Up to this tick's time: no sample older than it is still to come.
            self._guarded(self.roll_up, at)
            ticks += 1
            if ticks % reconcile_every == 0:
                self._guarded(self.reconcile)
            if ticks % prune_every == 0:
                self._guarded(self.prune)

    def _guarded(self, step, *args) -> None:
        """Run one step; a failure is logged and the loop goes on (the next step retries)."""
        # No transaction around a step: a tick waits on the engine for about a
        # second, and on SQLite an open write transaction would block the web
        # server's writes all that time. Each write is its own statement.
        try:
            step(*args)
        except runtime.EngineUnreachable:
            self._engine_lost()
        except Exception:
            logger.exception("the stats sampler's %s step failed", step.__name__)
            close_old_connections()

    def _engine_lost(self) -> None:
        if not self.engine_down:
            logger.warning("the Docker engine is unreachable; sampling resumes when it is back")
        self.engine_down = True

    def _engine_back(self) -> None:
        if self.engine_down:
            logger.warning("the Docker engine is reachable again; sampling resumed")
        self.engine_down = False


def _label_int(container: runtime.ContainerInfo, label: str) -> int | None:
    try:
        return int(container.labels.get(label, ""))
    except ValueError:
        return None
