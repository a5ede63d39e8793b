"""manage.py operate <workload> start|stop|restart: an operator's verbs, now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from engine import operations
from lib import runtime
from web.management.lookup import find_workload


class Command(BaseCommand):
    help = (
        "Start, stop or restart every container of a workload (not a deploy). A stopped "
        "workload stays stopped, a Docker or Berth restart too, until started or deployed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("action", choices=operations.ACTIONS)

    def handle(self, *args, workload: str, action: str, **options) -> None:
        target = find_workload(workload)
        try:
            done = operations.operate(workload=target, action=action)
        except operations.OperationRefused as exc:
            raise CommandError(str(exc)) from None
        except runtime.EngineError as exc:
            raise CommandError(f"The Docker engine refused: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"{target}: {done.get_state_display()}."))
