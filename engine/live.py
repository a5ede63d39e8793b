"""Live state: follow the engine's container events and keep the Container index true.

`manage.py follow_engine` runs `Follower.run()`; the tests run it in a thread,
or drive its steps (`reconcile`, `follow_window`) one at a time.

- On start, and after every lost stream, the follower **reconciles**: the
  index gains and loses containers as the sampler's reconcile does, then
  every live container is inspected and its row updated. A container that
  died while nobody watched (it ended badly, or the engine restarted it) is
  recorded then.
- Then it reads the engine's events in windows of `window` seconds (the
  engine closes each stream at the window's end, and the next window starts
  one nanosecond after it, so nothing is missed or read twice) and applies
  each window's at its end, once per container: a flood of events (a crash
  loop, a flapping health check, a busy host) costs one inspect and one
  write per container and window, not one per event. The die and oom events
  are kept in order, for the death events.
- A stream that breaks, or stays silent past its end (a hung engine), is
  lost: the follower waits a moment, reconciles and follows again.

A container that dies — it exits with a non-zero code or runs out of
memory, and Berth did not stop it (the workload runs, and no deploy,
restore, capture or operator's stop holds its lock) — is an event in the
event log, at most once a minute per container (a crash loop is one line,
not hundreds).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone
from django.utils.translation import gettext_noop

from engine import sampler
from lib import locks, runtime
from workloads.models import Container, EngineState, EventLog, Workload

logger = logging.getLogger(__name__)

# Short: a window's events are applied at its end, so this is how late the index may be.
WINDOW_SECONDS = 1.0
RETRY_SECONDS = 2.0
DEATH_QUIET = timedelta(seconds=60)

EXITED_MESSAGE = gettext_noop("Container %(container)s exited with code %(code)s.")
OOM_MESSAGE = gettext_noop("Container %(container)s ran out of memory.")
RESTARTED_MESSAGE = gettext_noop(
    "Container %(container)s died and the engine restarted it (%(restarts)s restarts so far)."
)
DEATH_MESSAGES = (EXITED_MESSAGE, OOM_MESSAGE, RESTARTED_MESSAGE)


@dataclass
class Burst:
    """One container's events in a window: what the death events need, and the last event."""

    deaths: list[runtime.EngineEvent] = field(default_factory=list)  # die and oom, in order
    destroyed: bool = False
    last: runtime.EngineEvent | None = None

    def add(self, event: runtime.EngineEvent) -> None:
        if event.action in ("die", "oom"):
            self.deaths.append(event)
        self.destroyed = self.destroyed or event.action == "destroy"
        self.last = event


class Follower:
    """The follower's state (where the event stream is, the OOMs seen) and its steps."""

    def __init__(self, *, window: float = WINDOW_SECONDS, retry: float = RETRY_SECONDS) -> None:
        self.window_nano = int(window * 1_000_000_000)
        self.retry = retry
        # The `since` of the next window, in engine nanoseconds; None: reconcile first.
        self.cursor: int | None = None
        # Containers whose `oom` event came before their `die`.
        self.oom_seen: set[str] = set()
        self.engine_down = False

    # --- the steps -----------------------------------------------------------

    def reconcile(self) -> list[Container]:
        """Inspect every live indexed container and update its row; returns the deaths found.

        The cursor is set to before the inspections: an event that happens
        meanwhile is read again by the next window and changes nothing twice.
        """
        started = time.time_ns()
        sampler.Sampler().reconcile()
        deaths = []
        for row in Container.objects.live():
            state = runtime.inspect_state(row.docker_id)
            if state is None:
                _mark_removed(row)
                continue
            ended = state.status != EngineState.RUNNING
            died_unseen = (
                row.state in ("", EngineState.RUNNING) and ended
                and (state.oom_killed or bool(state.exit_code))
            )
            # A row never seen ('' state) has no restart count to compare with.
            restarted_unseen = row.state != "" and state.restart_count > row.restart_count
            if (died_unseen or restarted_unseen) and self._record_death(
                row, exit_code=state.exit_code, oom=state.oom_killed,
                restarted=restarted_unseen and not died_unseen,
                restarts=state.restart_count,
            ):
                deaths.append(row)
            row.observe(
                state=state.status, restart_count=state.restart_count, health=state.health,
                since=state.since, exit_code=state.exit_code if ended else None,
                oom_killed=state.oom_killed if ended else None,
            )
        self.cursor = started
        return deaths

    def follow_window(self) -> int:
        """Read one window of events, then apply them (reconcile first if needed); returns
        how many were read."""
        if self.cursor is None:
            self.reconcile()
        until = max(self.cursor, time.time_ns()) + self.window_nano
        bursts: dict[str, Burst] = {}
        read = 0
        for event in runtime.events(since_nano=self.cursor, until_nano=until):
            bursts.setdefault(event.container_id, Burst()).add(event)
            read += 1
        rows = {row.docker_id: row
                for row in Container.objects.live().filter(docker_id__in=list(bursts))}
        for container_id, burst in bursts.items():
            self.apply(container_id, burst, rows.get(container_id))
        self.cursor = until + 1
        return read

    def apply(self, container_id: str, burst: Burst, row: Container | None) -> None:
        """Bring one live container's row up to date after its events of a window: one
        inspect, one write, and the death events its die and oom events call for.

        `row` is its index row: None if it has none (a deploy's new containers
        are indexed when it finishes; one the index lacks otherwise is picked
        up by a reconcile).
        """
        if row is None:
            self.oom_seen.discard(container_id)
            return
        state = runtime.inspect_state(container_id)
        last_die = next((e for e in reversed(burst.deaths) if e.action == "die"), None)
        code, oom, recorded = None, False, False
        for event in burst.deaths:
            if event.action == "oom":
                # Before its `die`, if the OOM killer took the container's main
                # process; alone, if it took another one and the container runs on.
                self.oom_seen.add(container_id)
                recorded = recorded or self._record_death(row, exit_code=None, oom=True)
                continue
            # The event says how it ended; the inspect (after the window: the engine may
            # have restarted it since) fills in only for the last one.
            now = state if event is last_die else None
            oom = container_id in self.oom_seen or bool(now and now.oom_killed)
            self.oom_seen.discard(container_id)
            code = event.exit_code if event.exit_code is not None else (
                now.exit_code if now else None)
            # The event first: whoever sees the new state sees why it is so. After
            # one, the others of the window are within its quiet minute anyway.
            recorded = recorded or self._record_death(row, exit_code=code, oom=oom)
        if state is None or burst.destroyed:
            _mark_removed(row)
            return
        ended = state.status != EngineState.RUNNING
        late_oom = last_die is None and any(e.action == "oom" for e in burst.deaths)
        if last_die is not None and (burst.last is last_die or not ended):
            # How its last run ended, also once the engine has started it again.
            ending = {"exit_code": code, "oom_killed": oom}
        elif late_oom and row.exit_code == 137:
            # The engine told the oom after the die (a window later, on a busy host): the
            # run that ended killed was killed for memory, whatever runs now.
            ending = {"exit_code": 137, "oom_killed": True}
        elif ended:
            ending = {"exit_code": state.exit_code, "oom_killed": state.oom_killed}
        else:
            ending = {}  # running, and no end in this window: how it last ended stays
        row.observe(state=state.status, restart_count=state.restart_count, health=state.health,
                    since=state.since, **ending)

    # --- the loop --------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the engine until `stop` is set (checked at the end of every window)."""
        while not stop.is_set():
            close_old_connections()
            try:
                self.follow_window()
            except runtime.EngineUnreachable:
                self._lost("the Docker engine is unreachable; live state resumes when it is back")
            except runtime.EngineError as exc:
                self._lost(f"the engine refused the event stream: {exc}")
            except Exception:
                logger.exception("following the engine's events failed")
                self._lost("")
            else:
                if self.engine_down:
                    logger.warning("following the engine's events again")
                self.engine_down = False
                continue
            stop.wait(self.retry)

    def _lost(self, message: str) -> None:
        if message and not self.engine_down:
            logger.warning("%s", message)
        self.engine_down = True
        self.cursor = None  # reconcile before following again
        close_old_connections()

    # --- deaths ------------------------------------------------------------------

    def _record_death(self, row: Container, *, exit_code: int | None, oom: bool,
                      restarted: bool = False, restarts: int = 0) -> bool:
        """An event for a container that died on its own; False when it is not one.

        Not one: a clean exit, or an end Berth caused (the workload is not
        running as far as Berth knows, or a deploy, restore, capture or
        operator's verb holds its lock and is stopping it).
        """
        if not (oom or exit_code or restarted):
            return False
        # The lock first, then the state: a verb writes the state before it lets the lock go,
        # so a lock found free means the state read after it is the verb's, if any.
        if not oom and locks.held_by_anyone(row.workload_id):
            return False
        workload = Workload.objects.filter(pk=row.workload_id).only("state").first()
        if workload is None or workload.state != Workload.State.RUNNING:
            return False
        recent = EventLog.objects.filter(
            workload_id=row.workload_id, message__in=DEATH_MESSAGES,
            params__container=row.name, created__gte=timezone.now() - DEATH_QUIET,
        )
        if recent.exists():
            return False
        if oom:
            message, params = OOM_MESSAGE, {"container": row.name}
        elif restarted:
            message, params = RESTARTED_MESSAGE, {"container": row.name,
                                                  "restarts": restarts}
        else:
            message, params = EXITED_MESSAGE, {"container": row.name, "code": exit_code}
        EventLog.objects.create(workload_id=row.workload_id, level=EventLog.Level.ERROR,
                                message=message, params=params)
        logger.warning("workload %s: container %s died (exit code %s, oom %s)",
                       row.workload_id, row.name, exit_code, oom)
        return True


def _mark_removed(row: Container) -> None:
    Container.objects.filter(pk=row.pk, removed__isnull=True).update(removed=timezone.now())
