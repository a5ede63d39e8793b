"""Live state: follow the engine's container events and keep the Container index true.

`manage.py follow_engine` runs `Follower.run()`; the tests run it in a thread,
or drive its steps (`reconcile`, `follow_window`, `apply`) one at a time.

- On start, and after every lost stream, the follower **reconciles**: the
  index gains and loses containers as the sampler's reconcile does, then
  every live container is inspected and its row updated. A container that
  died while nobody watched (it ended badly, or the engine restarted it) is
  recorded then.
- Then it reads the engine's events in windows of `window` seconds (the
  engine closes each stream at the window's end, and the next window starts
  one nanosecond after it, so nothing is missed or read twice) and applies
  each as it comes: inspect the container, update its row.
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
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone
from django.utils.translation import gettext_noop

from engine import sampler
from lib import locks, runtime
from workloads.models import Container, EngineState, EventLog, Workload

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 5.0
RETRY_SECONDS = 2.0
DEATH_QUIET = timedelta(seconds=60)

EXITED_MESSAGE = gettext_noop("Container %(container)s exited with code %(code)s.")
OOM_MESSAGE = gettext_noop("Container %(container)s ran out of memory.")
RESTARTED_MESSAGE = gettext_noop(
    "Container %(container)s died and the engine restarted it (%(restarts)s restarts so far)."
)
DEATH_MESSAGES = (EXITED_MESSAGE, OOM_MESSAGE, RESTARTED_MESSAGE)


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
        """Read and apply one window of events (reconcile first if needed); returns how many."""
        if self.cursor is None:
            self.reconcile()
        until = max(self.cursor, time.time_ns()) + self.window_nano
        applied = 0
        for event in runtime.events(since_nano=self.cursor, until_nano=until):
            self.apply(event)
            applied += 1
        self.cursor = until + 1
        return applied

    def apply(self, event: runtime.EngineEvent) -> Container | None:
        """Bring one live container's row up to date after its event; None if not indexed.

        A deploy's new containers are indexed when it finishes (they run
        then); one the index lacks otherwise is picked up by a reconcile.
        """
        row = Container.objects.live().filter(docker_id=event.container_id).first()
        if row is None:
            self.oom_seen.discard(event.container_id)
            return None
        if event.action == "oom":
            # Before its `die`, if the OOM killer took the container's main
            # process; alone, if it took another one and the container runs on.
            self.oom_seen.add(row.docker_id)
            self._record_death(row, exit_code=None, oom=True)
        state = runtime.inspect_state(row.docker_id)
        if state is None or event.action == "destroy":
            _mark_removed(row)
            return row
        ended = state.status != EngineState.RUNNING
        if event.action == "die":
            # The engine may have restarted it already (its restart policy):
            # the event says how it ended, the inspect what it is now.
            oom = row.docker_id in self.oom_seen or state.oom_killed
            self.oom_seen.discard(row.docker_id)
            code = event.exit_code if event.exit_code is not None else state.exit_code
            # The event first: whoever sees the new state sees why it is so.
            self._record_death(row, exit_code=code, oom=oom)
            row.observe(state=state.status, restart_count=state.restart_count,
                        health=state.health, since=state.since, exit_code=code, oom_killed=oom)
        else:
            row.observe(state=state.status, restart_count=state.restart_count,
                        health=state.health, since=state.since,
                        exit_code=state.exit_code if ended else None,
                        oom_killed=state.oom_killed if ended else None)
        return row

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
        workload = Workload.objects.filter(pk=row.workload_id).only("state").first()
        if workload is None or workload.state != Workload.State.RUNNING:
            return False
        if not oom and locks.held_by_anyone(row.workload_id):
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
