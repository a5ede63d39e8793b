"""manage.py restore <workload> <snapshot> --confirm <slug>: restore now, with a progress bar."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from engine import restores
from snapshots.errors import PreflightError
from snapshots.models import RestoreJob, Snapshot
from web.management.lookup import find_workload

BAR_WIDTH = 30


class RestoreOutput:
    """A restore's progress bar and outcome, for the commands that run one (restore, rollback)."""

    _drawn = 0.0

    def _draw(self, job: RestoreJob) -> None:
        """One line, redrawn at most ten times a second: the phase and the bytes unpacked."""
        now = time.monotonic()
        if now - self._drawn < 0.1 and job.phase == RestoreJob.Phase.EXTRACTING:
            return
        self._drawn = now
        done, total = job.bytes_done, job.bytes_total or 1
        filled = min(BAR_WIDTH, done * BAR_WIDTH // total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        phase = job.get_phase_display()
        self.stdout.write(
            f"\r[{bar}] {min(100, done * 100 // total):3d}% {filesizeformat(done)} of "
            f"{filesizeformat(job.bytes_total)} — {phase}\x1b[K", ending="",
        )
        self.stdout.flush()

    def _report(self, job: RestoreJob) -> None:
        job.refresh_from_db()
        if job.is_active:
            raise CommandError(
                f"Restore #{job.pk} could not be finished or undone here (the server log says "
                "why); `manage.py recover` or the workload's next deploy will do it "
                "from its journal."
            )
        if job.outcome == RestoreJob.Outcome.FAILED:
            raise CommandError(f"Restore #{job.pk} failed; nothing was changed: "
                               f"{job.reason_text}")
        message = f"Restore #{job.pk}: {job.get_outcome_display()}."
        if job.pre_restore_snapshot_id:
            message += f" The previous data is snapshot #{job.pre_restore_snapshot_id}."
        if job.outcome == RestoreJob.Outcome.SUCCEEDED and not job.kept_paths:
            self.stdout.write(self.style.SUCCESS(message))
        else:
            self.stdout.write(self.style.WARNING(message))
        if job.reason:
            self.stdout.write(self.style.WARNING(job.reason_text))
        if job.outcome == RestoreJob.Outcome.NOT_STARTED:
            raise CommandError("The workload did not start again; see its deploy history.")


class Command(RestoreOutput, BaseCommand):
    help = (
        "Replace a workload's volumes with a snapshot, then bring the workload back on the "
        "version it ran. The current data is kept as a pre-restore snapshot. Needs "
        "--confirm with the workload's slug."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("snapshot", type=int, help="the snapshot's id")
        parser.add_argument("--confirm", required=True, metavar="PATH",
                            help="the workload's path, project/stage/workload, to confirm "
                                 "that its data is replaced")

    def handle(self, *args, workload: str, snapshot: int, confirm: str, **options) -> None:
        target = find_workload(workload)
        if confirm != target.path:
            raise CommandError(f"--confirm must be the workload's path, {target.path!r}: its "
                               "volumes are about to be replaced.")
        chosen = Snapshot.objects.filter(workload=target, pk=snapshot).first()
        if chosen is None:
            raise CommandError(f"Workload {target} has no snapshot #{snapshot}.")
        self.stdout.write(f"Restoring snapshot #{chosen.pk} ({filesizeformat(chosen.data_bytes)}"
                          f" of data) onto {target} …")
        self._drawn = 0.0
        try:
            job = restores.restore(workload=target, snapshot=chosen, progress=self._draw)
        except restores.RestoreBusy as exc:
            raise CommandError(str(exc)) from None
        except PreflightError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        self._report(job)
