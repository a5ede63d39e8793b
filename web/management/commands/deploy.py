"""manage.py deploy <workload>: deploy now, in this process, through dispatch()."""

from django.core.management.base import BaseCommand, CommandError

from engine import deploys
from web.management.lookup import find_workload
from workloads.models import DeployInProgress, DeployRecord


class Command(BaseCommand):
    help = "Deploy a workload (by id or project/stage/workload) and wait for the result."

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")

    def handle(self, *args, workload: str, **options) -> None:
        target = find_workload(workload)
        self.stdout.write(f"Deploying {target} …")
        try:
            record = deploys.dispatch(workload=target, reason=DeployRecord.Reason.MANUAL)
        except DeployInProgress as exc:
            raise CommandError(str(exc)) from None
        if record.outcome != DeployRecord.Outcome.SUCCEEDED:
            raise CommandError(f"Deploy #{record.pk} failed: {record.failure_message}")
        self.stdout.write(self.style.SUCCESS(f"Deploy #{record.pk} runs {record.pinned_reference}"))
