"""The two built-in groups and what they may do.

The data migration creates them; a post_migrate handler keeps them in step
with every permission a later migration adds (and restores them after a test
database flush).
"""

from django.contrib.auth.management import create_permissions

OPERATOR_APPS = ("workloads", "snapshots")


def _ensure_permissions(apps) -> None:
    # Permissions are normally created after all migrations ran; create them
    # now so the groups can be given them. Inside a migration the app configs
    # are stubs without a models module, which create_permissions skips.
    for app_config in apps.get_app_configs():
        stub = getattr(app_config, "models_module", None) is None
        if stub:
            app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        if stub:
            app_config.models_module = None


def sync_groups(apps, schema_editor=None) -> None:
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    berth = Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS)
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*berth)
    viewers, _ = Group.objects.get_or_create(name="viewers")
    viewers.permissions.add(*berth.filter(codename__startswith="view_"))


def sync_groups_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps

    sync_groups(apps)
