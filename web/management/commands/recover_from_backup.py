"""manage.py recover_from_backup <target> <key>: bring a workload back from a backup target."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from engine import disaster
from lib import offsite
from snapshots.models import RestoreJob
from web.management.lookup import (
    find_target,
    find_workload,
    read_identity,
    read_secret_file,
)


class Command(BaseCommand):
    help = (
        "Recover a workload from a copy on a backup target (a key from backup_catalogue): "
        "re-create it from the copy's sidecar, or recover onto an existing workload with "
        "--workload and --confirm. The archive is downloaded, checked against its SHA-256, "
        "validated in full like an uploaded archive, imported and restored; a re-created "
        "workload is deployed on the digest it ran only with --deploy. "
        "docs/disaster-recovery.md is the runbook."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("target", help="the backup target's name or id")
        parser.add_argument("key", help="the copy's name, as backup_catalogue lists it")
        parser.add_argument("--identity-file", metavar="PATH",
                            help="an age identity file ('-' reads standard input)")
        parser.add_argument("--passphrase-file", metavar="PATH",
                            help="a file holding the target's passphrase ('-' reads standard "
                                 "input), instead of an identity")
        parser.add_argument("--workload", metavar="WORKLOAD",
                            help="recover onto this existing workload (id or project/stage/"
                                 "workload) instead of re-creating it")
        parser.add_argument("--deploy", action="store_true",
                            help="deploy a re-created workload on the digest its sidecar "
                                 "recorded, once restored (review it in backup_catalogue "
                                 "first)")
        parser.add_argument("--confirm", metavar="PATH",
                            help="with --workload: its path, project/stage/workload, to "
                                 "confirm that its data is "
                                 "replaced")

    def handle(self, *args, target: str, key: str, identity_file: str | None,
               passphrase_file: str | None, workload: str | None, confirm: str | None,
               deploy: bool, **options) -> None:
        chosen = find_target(target)
        identity = read_identity(identity_file)
        into = None
        if workload is not None:
            into = find_workload(workload)
            if confirm != into.path:
                raise CommandError(f"--confirm must be the workload's path, {into.path!r}: "
                                   "its volumes are about to be replaced.")
        self._shown = -1
        try:
            row = disaster.request_recovery(target=chosen, key=key, identity=identity,
                                            passphrase=read_secret_file(passphrase_file),
                                            into=into, deploy=deploy, queued=False)
        except disaster.RecoveryError as exc:
            raise CommandError(f"{exc.code}: {exc}") from None
        except offsite.OffsiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        result = disaster.run_recovery(row, progress=self._draw)
        self.stdout.write("")
        row.refresh_from_db()
        if result is None:
            raise CommandError(f"{row.failure_code}: {row.failure_text} (recovery #{row.pk})")
        self._report(result)

    def _draw(self, done: int, total: int) -> None:
        percent = done * 100 // (total or 1)
        if percent != self._shown:
            self._shown = percent
            self.stdout.write(f"\rdownloading {filesizeformat(done)} of "
                              f"{filesizeformat(total)} ({percent}%)", ending="")
            self.stdout.flush()

    def _report(self, result: disaster.Recovered) -> None:
        workload = result.workload
        verb = "Re-created" if result.created else "Recovered onto"
        self.stdout.write(f"{verb} {workload} (id {workload.pk}); imported snapshot "
                          f"#{result.snapshot.pk} (sha256 {result.snapshot.sha256}).")
        job = result.restore
        if job.outcome != RestoreJob.Outcome.SUCCEEDED:
            raise CommandError(f"The restore (job #{job.pk}) ended "
                               f"{job.get_outcome_display().lower()}: {job.reason_text}")
        self.stdout.write(self.style.SUCCESS(f"Restored (job #{job.pk})."))
        for name in result.missing_values:
            self.stdout.write(self.style.WARNING(
                f"{name}: its value was not in the backup (an unencrypted target keeps no "
                "secret values); set it, then deploy."))
        deploy = result.deploy
        if deploy is not None:
            if deploy.outcome != deploy.Outcome.SUCCEEDED:
                raise CommandError(f"The deploy (#{deploy.pk}) failed: {deploy.failure_message}")
            self.stdout.write(self.style.SUCCESS(
                f"Deployed {deploy.pinned_reference} (deploy #{deploy.pk})."))
