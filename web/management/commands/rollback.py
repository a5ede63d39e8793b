"""manage.py rollback <workload> <deploy_id> [--no-configuration] [--secret NAME]...
[--data --confirm <path>]: replay an earlier deploy.

Its pinned image or commit, with the configuration it ran by default; with --data also
the data from just before it ran (its pre-deploy snapshot), in one restore
(docs/restore-protocol.md, "Rollback with data").
"""

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engine import deploys, restores
from snapshots.errors import PreflightError
from web.management.commands.restore import RestoreOutput
from web.management.lookup import find_workload
from workloads.models import DeployInProgress, DeployRecord, Workload


class Command(RestoreOutput, BaseCommand):
    help = (
        "Roll a workload back to an earlier successful deploy's pinned image (or git commit) "
        "and the configuration it ran, and wait. With --data, also put back the data as it "
        "was just before that deploy ran (its pre-deploy snapshot; the current data is kept "
        "as a pre-restore snapshot); that needs --confirm with the workload's path."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("deploy_id", type=int, help="the deploy to roll back to")
        parser.add_argument(
            "--no-configuration", action="store_true",
            help="roll back the code only: keep today's configuration and configured image",
        )
        parser.add_argument(
            "--secret", action="append", default=[], metavar="NAME",
            help="take secret variable NAME's value from this command's environment variable "
                 "NAME (for a secret whose kept value is gone; never on the command line)",
        )
        parser.add_argument("--data", action="store_true",
                            help="also restore the deploy's pre-deploy snapshot, in one operation")
        parser.add_argument("--confirm", metavar="PATH",
                            help="with --data: the workload's path, project/stage/workload, to "
                                 "confirm that its data is replaced")

    def handle(self, *args, workload: str, deploy_id: int, no_configuration: bool,
               secret: list[str], data: bool, confirm: str | None, **options) -> None:
        target = find_workload(workload)
        secrets = self._secrets(secret)
        if secrets and no_configuration:
            raise CommandError("--secret goes with a rollback of the configuration only.")
        if data:
            if secrets:
                raise CommandError("--secret cannot go with --data: a rollback with data sets "
                                   "the configuration back only with the values Berth kept.")
            self._with_data(target, deploy_id, confirm, configuration=not no_configuration)
            return
        if confirm is not None:
            raise CommandError("--confirm goes with --data only.")
        try:
            record = deploys.rollback(workload=target, deploy_id=deploy_id,
                                      configuration=not no_configuration, secrets=secrets)
        except DeployRecord.DoesNotExist:
            raise CommandError(f"{target} has no deploy #{deploy_id}.") from None
        except (deploys.RollbackRefused, DeployInProgress) as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if record.outcome != DeployRecord.Outcome.SUCCEEDED:
            raise CommandError(f"Rollback #{record.pk} failed: {record.failure_message}")
        restored = DeployRecord.RollbackRestored(record.rollback_restored).label
        message = (f"Rolled back to deploy #{deploy_id} ({restored}): runs "
                   f"{record.pinned_reference}")
        self.stdout.write(self.style.SUCCESS(message))

    def _with_data(self, target: Workload, deploy_id: int, confirm: str | None, *,
                   configuration: bool) -> None:
        if confirm != target.path:
            raise CommandError(f"--data needs --confirm with the workload's path, "
                               f"{target.path!r}: its volumes are about to be replaced.")
        self.stdout.write(f"Rolling {target} back to deploy #{deploy_id} with the data from "
                          "before it ran …")
        try:
            job = restores.rollback_with_data(workload=target, deploy_id=deploy_id,
                                              configuration=configuration,
                                              progress=self._draw)
        except DeployRecord.DoesNotExist:
            raise CommandError(f"{target} has no deploy #{deploy_id}.") from None
        except (deploys.RollbackRefused, restores.RestoreBusy, PreflightError) as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write("")
        self._report(job)
        job.refresh_from_db()
        if job.deploy is not None:
            self.stdout.write(f"Deploy #{job.deploy_id} runs {job.deploy.pinned_reference}.")

    @staticmethod
    def _secrets(names: list[str]) -> dict[str, str]:
        missing = [name for name in names if name not in os.environ]
        if missing:
            raise CommandError(f"--secret {', '.join(missing)}: no such environment variable.")
        return {name: os.environ[name] for name in names}
