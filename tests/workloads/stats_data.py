"""Synthetic Container index rows and stats samples, written the way the sampler writes them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from workloads.models import Container, ContainerStatsSample, DeployRecord, Workload

MIB = 1024 * 1024
# A fixed "now" a little after a round minute, so windows start between ticks.
NOW = datetime(2026, 11, 26, 12, 0, 7, tzinfo=UTC)


def container(
    workload: Workload, *, replica: int = 1, created: datetime | None = None,
    removed: datetime | None = None,
) -> Container:
    return Container.objects.create(
        workload=workload, docker_id=uuid.uuid4().hex * 2, name=f"c-{uuid.uuid4().hex[:8]}",
        replica=replica, image_reference="127.0.0.1:5000/berth-test/busybox:latest",
        created=created or NOW - timedelta(days=30), removed=removed,
    )


def ticks(end: datetime, *, every: int, count: int) -> list[datetime]:
    """`count` tick times on the `every`-second grid, the newest at or before `end`."""
    last = int(end.timestamp()) // every * every
    return [datetime.fromtimestamp(last - every * n, UTC) for n in reversed(range(count))]


def sample(
    c: Container, at: Iterable[datetime], *, cpu: float | None = None,
    memory: int | None = None, values=None,
) -> list[ContainerStatsSample]:
    """Samples of `c` at each time: fixed cpu/memory, or values(c, t) -> (cpu, memory)."""
    rows = []
    for t in at:
        cpu_t, memory_t = values(c, t) if values else (cpu, memory)
        rows.append(ContainerStatsSample(
            container=c, timestamp=t, cpu_percent=cpu_t, memory_bytes=memory_t,
            memory_limit=512 * MIB,
        ))
    return ContainerStatsSample.objects.bulk_create(rows, batch_size=5000)


def expected_buckets(rows: Iterable[ContainerStatsSample], step: int) -> dict[datetime, tuple]:
    """An independent reference: per bucket, the mean over its ticks of each tick's totals."""
    per_tick: dict[datetime, list] = defaultdict(lambda: [0.0, 0, 0])
    for row in rows:
        total = per_tick[row.timestamp]
        total[0] += row.cpu_percent
        total[1] += row.memory_bytes
        total[2] += 1
    buckets: dict[datetime, list] = defaultdict(list)
    for t, total in per_tick.items():
        bucket = datetime.fromtimestamp(int(t.timestamp()) // step * step, UTC)
        buckets[bucket].append(total)
    return {
        bucket: (
            sum(t[0] for t in totals) / len(totals),
            sum(t[1] for t in totals) / len(totals),
            sum(t[2] for t in totals) / len(totals),
        )
        for bucket, totals in sorted(buckets.items())
    }


def deploy(
    workload: Workload, *, at: datetime, reason: str = DeployRecord.Reason.MANUAL,
    outcome: str = DeployRecord.Outcome.SUCCEEDED,
) -> DeployRecord:
    """A finished ledger row: requested a few seconds before `at`, finished at `at`."""
    record = DeployRecord.open(workload=workload, reason=reason)
    DeployRecord.objects.filter(pk=record.pk).update(
        created=at - timedelta(seconds=5), started=at - timedelta(seconds=4),
        finished=at, outcome=outcome,
    )
    record.refresh_from_db()
    return record
