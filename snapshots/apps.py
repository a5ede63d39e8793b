from django.apps import AppConfig
from django.db.models.signals import post_delete
from django.utils.translation import gettext_lazy as _


class SnapshotsConfig(AppConfig):
    name = "snapshots"
    verbose_name = _("Snapshots")

    def ready(self) -> None:
        from snapshots import signals
        from snapshots.models import Snapshot
        from workloads.models import Workload

        post_delete.connect(signals.remove_archive_after_commit, sender=Snapshot)
        post_delete.connect(signals.remove_workload_dir_after_commit, sender=Workload)
