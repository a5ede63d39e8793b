from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate
from django.utils.translation import gettext_lazy as _


class WorkloadsConfig(AppConfig):
    name = "workloads"
    verbose_name = _("Workloads")

    def ready(self) -> None:
        from workloads.groups import sync_groups_after_migrate
        from workloads.models import Workload, remove_git_cache_after_delete

        post_migrate.connect(sync_groups_after_migrate, sender=self)
        # A signal rather than Workload.delete(): bulk deletes (the admin's)
        # skip delete() but still send post_delete for every row.
        post_delete.connect(remove_git_cache_after_delete, sender=Workload)
