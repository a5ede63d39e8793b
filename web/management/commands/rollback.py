"""manage.py rollback <workload> <deploy_id>: replay an earlier deploy's pinned image or commit."""

from django.core.management.base import BaseCommand, CommandError

from engine import deploys
from web.management.lookup import find_workload
from workloads.models import DeployInProgress, DeployRecord


class Command(BaseCommand):
    help = (
        "Roll a workload back to an earlier successful deploy's pinned image (or git commit), "
        "and wait."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("deploy_id", type=int, help="the deploy to roll back to")

    def handle(self, *args, workload: str, deploy_id: int, **options) -> None:
        target = find_workload(workload)
        try:
            record = deploys.rollback(workload=target, deploy_id=deploy_id)
        except DeployRecord.DoesNotExist:
            raise CommandError(f"{target} has no deploy #{deploy_id}.") from None
        except (deploys.RollbackRefused, DeployInProgress) as exc:
            raise CommandError(str(exc)) from None
        if record.outcome != DeployRecord.Outcome.SUCCEEDED:
            raise CommandError(f"Rollback #{record.pk} failed: {record.failure_message}")
        message = f"Rolled back to deploy #{deploy_id}: runs {record.pinned_reference}"
        self.stdout.write(self.style.SUCCESS(message))
