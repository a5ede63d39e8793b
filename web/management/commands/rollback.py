"""manage.py rollback <workload> <deploy_id> [--no-configuration] [--secret NAME]...:
replay an earlier deploy's pinned image or commit, with its configuration by default."""

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engine import deploys
from web.management.lookup import find_workload
from workloads.models import DeployInProgress, DeployRecord


class Command(BaseCommand):
    help = (
        "Roll a workload back to an earlier successful deploy's pinned image (or git commit) "
        "and the configuration it ran, and wait."
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

    def handle(self, *args, workload: str, deploy_id: int, no_configuration: bool,
               secret: list[str], **options) -> None:
        target = find_workload(workload)
        secrets = self._secrets(secret)
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
        restored = DeployRecord.Restored(record.rollback_restored).label
        message = (f"Rolled back to deploy #{deploy_id} ({restored}): runs "
                   f"{record.pinned_reference}")
        self.stdout.write(self.style.SUCCESS(message))

    @staticmethod
    def _secrets(names: list[str]) -> dict[str, str]:
        missing = [name for name in names if name not in os.environ]
        if missing:
            raise CommandError(f"--secret {', '.join(missing)}: no such environment variable.")
        return {name: os.environ[name] for name in names}
