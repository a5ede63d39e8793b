"""The Container index and the stats samples that join through it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from workloads.models.workloads import Workload


class ContainerQuerySet(models.QuerySet):
    def live(self) -> ContainerQuerySet:
        return self.filter(removed__isnull=True)


# How long a container the engine restarted counts as restarting once it runs again.
FLAPPING_SECONDS = 30


class EngineState(models.TextChoices):
    """A container's status as the engine reports it ("" until Berth has seen it)."""

    CREATED = "created", _("Created")
    RUNNING = "running", pgettext_lazy("container state", "Running")
    PAUSED = "paused", _("Paused")
    RESTARTING = "restarting", _("Restarting")
    REMOVING = "removing", _("Removing")
    EXITED = "exited", _("Exited")
    DEAD = "dead", _("Dead")


class Health(models.TextChoices):
    """A container's health check result ("" for an image without one)."""

    STARTING = "starting", _("Starting")
    HEALTHY = "healthy", _("Healthy")
    UNHEALTHY = "unhealthy", _("Unhealthy")


class Container(models.Model):
    """The index of Docker containers a workload has had (stats join through it)."""

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="containers", verbose_name=_("workload")
    )
    docker_id = models.CharField(_("Docker id"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=255)
    replica = models.PositiveSmallIntegerField(_("replica"))
    image_reference = models.CharField(_("image"), max_length=512)
    created = models.DateTimeField(_("created"), default=timezone.now)
    removed = models.DateTimeField(_("removed"), null=True, blank=True)
    # What the engine last said about the container (engine/live.py follows its
    # events): its status, how it last ended, and since when it is so.
    state = models.CharField(
        _("engine state"), max_length=12, choices=EngineState, blank=True, default=""
    )
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    oom_killed = models.BooleanField(_("killed for lack of memory"), default=False)
    restart_count = models.PositiveIntegerField(_("restarts"), default=0)
    health = models.CharField(_("health"), max_length=10, choices=Health, blank=True, default="")
    state_since = models.DateTimeField(_("state since"), null=True, blank=True)

    objects = ContainerQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "replica"]
        verbose_name = _("container")
        verbose_name_plural = _("containers")
        indexes = [models.Index(fields=["workload", "removed"], name="container_live_idx")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def replace_for(cls, workload: Workload, new: list[tuple[str, str, int]], image: str) -> None:
        """Record `new` (docker id, name, replica) as the workload's live containers."""
        now = timezone.now()
        # One transaction: the index never shows both generations live, or none.
        with transaction.atomic():
            cls.objects.filter(workload=workload, removed__isnull=True).update(removed=now)
            # The deploy has just started them (runtime.start checks they run);
            # the follower's events say what happens to them from here.
            cls.objects.bulk_create(
                cls(workload=workload, docker_id=docker_id, name=name, replica=replica,
                    image_reference=image, created=now, state=EngineState.RUNNING,
                    state_since=now)
                for docker_id, name, replica in new
            )

    def observe(self, *, state: str, restart_count: int, health: str,
                since: datetime | None, exit_code: int | None = None,
                oom_killed: bool | None = None) -> None:
        """Record what the engine says of the container now.

        `exit_code` and `oom_killed` are how it last ended: None leaves them
        as they are, so a container running again after a crash still shows
        how it crashed.
        """
        self.state, self.restart_count, self.health = state, restart_count, health
        self.state_since = since or self.state_since
        fields = ["state", "restart_count", "health", "state_since"]
        if exit_code is not None:
            self.exit_code = exit_code
            fields.append("exit_code")
        if oom_killed is not None:
            self.oom_killed = oom_killed
            fields.append("oom_killed")
        # One UPDATE of these columns: a deploy may mark the row removed meanwhile.
        Container.objects.filter(pk=self.pk).update(**{f: getattr(self, f) for f in fields})

    def is_flapping(self, now: datetime) -> bool:
        """Restarting, or running again less than FLAPPING_SECONDS after the engine restarted it."""
        if self.state == EngineState.RESTARTING:
            return True
        return (self.state == EngineState.RUNNING and self.restart_count > 0
                and self.state_since is not None
                and now - self.state_since < timedelta(seconds=FLAPPING_SECONDS))


class ContainerStatsSample(models.Model):
    """One sampler tick's reading of one container (written by engine/sampler.py).

    A tick's samples share one timestamp, so a workload's usage at an instant
    is the sum over the rows with that timestamp.
    """

    # No index of its own: (container, timestamp) below serves every lookup by container.
    container = models.ForeignKey(
        Container, models.CASCADE, related_name="stats", verbose_name=_("container"),
        db_index=False,
    )
    timestamp = models.DateTimeField(_("timestamp"))
    cpu_percent = models.FloatField(_("CPU percent"))
    memory_bytes = models.PositiveBigIntegerField(_("memory (bytes)"))
    memory_limit = models.PositiveBigIntegerField(_("memory limit (bytes)"))

    class Meta:
        verbose_name = _("stats sample")
        verbose_name_plural = _("stats samples")
        indexes = [
            # The history query: a workload's containers, then a time range of each.
            models.Index(fields=["container", "timestamp"], name="stats_container_time_idx"),
            # Pruning: everything older than the retention, whatever the container.
            models.Index(fields=["timestamp"], name="stats_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.container_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class StatsRollup(models.Model):
    """A workload's usage over one minute or one hour, rolled up by engine/sampler.py.

    Sums over the period's ticks of each tick's totals (a tick's totals are the
    sums over the workload's samples with its timestamp), and the number of
    those ticks: any bucket made of whole periods has the mean of its ticks'
    totals as sum ÷ ticks, the same number the raw samples give.
    """

    class Resolution(models.IntegerChoices):
        MINUTE = 60, _("minute")
        HOUR = 3600, _("hour")

    # No index of its own: the unique constraint below starts with the workload.
    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="stats_rollups", verbose_name=_("workload"),
        db_index=False,
    )
    resolution = models.PositiveIntegerField(_("resolution (seconds)"), choices=Resolution)
    start = models.DateTimeField(_("start"))
    ticks = models.PositiveIntegerField(_("ticks"))
    cpu_percent = models.FloatField(_("CPU percent, summed over the ticks"))
    memory_bytes = models.FloatField(_("memory (bytes), summed over the ticks"))
    samples = models.PositiveIntegerField(_("samples"))

    class Meta:
        verbose_name = _("stats rollup")
        verbose_name_plural = _("stats rollups")
        constraints = [
            # Also the history query's index: a workload, a resolution, a time range.
            models.UniqueConstraint(
                fields=["workload", "resolution", "start"], name="stats_rollup_unique"),
        ]
        indexes = [
            # Pruning, and the newest period rolled up, whatever the workload.
            models.Index(fields=["resolution", "start"], name="stats_rollup_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.workload_id} @ {self.start:%Y-%m-%d %H:%M} / {self.resolution} s"


class LiveState(models.TextChoices):
    """A workload's state as its containers show it (live_summary says how it is derived)."""

    NEW = "new", _("Never deployed")
    DEPLOYING = "deploying", _("Deploying")
    STOPPED = "stopped", _("Stopped by an operator")
    FAILED = "failed", _("Last deploy failed")
    RUNNING = "running", pgettext_lazy("workload state", "Running")
    DEGRADED = "degraded", _("Degraded")
    UNHEALTHY = "unhealthy", _("Unhealthy")
    RESTARTING = "restarting", _("Restarting")
    EXITED = "exited", _("Exited")
    GONE = "gone", _("Containers gone")


@dataclass(frozen=True)
class LiveSummary:
    state: str
    replicas: int = 0  # live containers
    up: int = 0  # running and not unhealthy
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    since: datetime | None = None

    @property
    def label(self) -> str:
        return str(LiveState(self.state).label)

    @property
    def detail(self) -> str:
        """What the label leaves out: how many replicas are up, how the others ended."""
        parts = []
        if self.state in (LiveState.DEGRADED, LiveState.UNHEALTHY):
            parts.append(gettext("%(up)d of %(replicas)d up") % {
                "up": self.up, "replicas": self.replicas})
        if self.state in (LiveState.EXITED, LiveState.RESTARTING, LiveState.DEGRADED):
            if self.oom_killed:
                parts.append(gettext("out of memory"))
            elif self.exit_code is not None:
                parts.append(gettext("exit code %(code)d") % {"code": self.exit_code})
        return ", ".join(parts)


# States Berth decided itself: the containers do not change them.
_DECIDED = {
    Workload.State.NEW: LiveState.NEW,
    Workload.State.DEPLOYING: LiveState.DEPLOYING,
    Workload.State.STOPPED: LiveState.STOPPED,
    Workload.State.FAILED: LiveState.FAILED,
}


def live_summary(workload: Workload, containers: list[Container] | None = None, *,
                 now: datetime | None = None) -> LiveSummary:
    """The workload's live state, from its live containers (read unless given).

    Only a workload Berth runs is judged by its containers: never deployed,
    deploying, stopped by an operator and a failed last deploy stay what
    Berth recorded. A replica is up when it runs, is not unhealthy and is
    not flapping (restarting now, or restarted by the engine less than
    FLAPPING_SECONDS ago: a crash loop runs between its crashes). Then:
    every replica up is running; some up is degraded; none up but some
    running is unhealthy; some flapping is restarting; else exited. A
    container the follower has not seen yet ("" state) was just started by a
    deploy and counts as running.
    """
    if workload.state in _DECIDED:
        return LiveSummary(_DECIDED[workload.state])
    if containers is None:
        containers = getattr(workload, "live_containers", None)
    if containers is None:
        containers = list(workload.containers.live())
    if not containers:
        return LiveSummary(LiveState.GONE)
    now = now or timezone.now()
    flapping = [c for c in containers if c.is_flapping(now)]
    running = [c for c in containers if c.state in ("", EngineState.RUNNING)]
    up = [c for c in running if c.health != Health.UNHEALTHY and c not in flapping]
    down = [c for c in containers if c not in up]
    if len(up) == len(containers):
        state = LiveState.RUNNING
    elif up:
        state = LiveState.DEGRADED
    elif flapping:
        state = LiveState.RESTARTING
    elif running:
        state = LiveState.UNHEALTHY
    else:
        state = LiveState.EXITED
    # How the replicas that are down last ended: an OOM first, then a failure.
    ended = sorted(down, key=lambda c: (not c.oom_killed, not c.exit_code, c.replica))
    since = [c.state_since for c in (down or containers) if c.state_since]
    return LiveSummary(
        state=state, replicas=len(containers), up=len(up),
        exit_code=ended[0].exit_code if ended else None,
        oom_killed=bool(ended) and ended[0].oom_killed,
        restart_count=sum(c.restart_count for c in containers),
        since=max(since) if since else None,
    )


def with_live_containers(workloads: models.QuerySet) -> models.QuerySet:
    """`workloads` with each one's live containers as `live_containers`, in one query."""
    return workloads.prefetch_related(
        models.Prefetch("containers", queryset=Container.objects.live(),
                        to_attr="live_containers")
    )
