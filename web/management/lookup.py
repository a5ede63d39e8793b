"""Finding a workload from a command-line argument."""

from django.core.management.base import CommandError

from workloads.models import Workload


def find_workload(ref: str) -> Workload:
    """A workload by id, or by `project/stage/workload` slugs."""
    workloads = Workload.objects.with_parents()
    if ref.isdigit():
        found = workloads.filter(pk=int(ref)).first()
    else:
        parts = ref.split("/")
        if len(parts) != 3:
            raise CommandError(f"{ref!r} is neither an id nor project/stage/workload.")
        project, stage, slug = parts
        found = workloads.filter(
            stage__project__slug=project, stage__slug=stage, slug=slug
        ).first()
    if found is None:
        raise CommandError(f"No workload {ref!r}.")
    return found
