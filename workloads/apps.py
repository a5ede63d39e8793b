from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class WorkloadsConfig(AppConfig):
    name = "workloads"
    verbose_name = _("Workloads")

    def ready(self) -> None:
        from workloads.groups import sync_groups_after_migrate

        post_migrate.connect(sync_groups_after_migrate, sender=self)
