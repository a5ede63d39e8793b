"""The two built-in groups and what they may do.

Data migrations create them and give them each new permission (every
migration that adds a permission calls `sync_groups`). A post_migrate handler
recreates a group that is missing altogether (after a test database flush,
or if an admin deleted it) but never touches an existing one, so an admin can
narrow a group for good.
"""

from django.contrib.auth.management import create_permissions

OPERATOR_APPS = ("workloads", "snapshots")
# Permissions named view_* that viewers still do not get: logs can carry secrets.
NOT_FOR_VIEWERS = ("view_logs",)


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


def sync_groups(apps, schema_editor=None, *, only_missing: bool = False) -> None:
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    berth = Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS)
    for name, permissions in (
        ("operators", berth),
        ("viewers", berth.filter(codename__startswith="view_").exclude(
            codename__in=NOT_FOR_VIEWERS)),
    ):
        group, created = Group.objects.get_or_create(name=name)
        if created or not only_missing:
            group.permissions.add(*permissions)


def granted_to_operators(*codenames: str):
    """A migration step that adds these new permissions to the operators group, and nothing
    else: sync_groups would give back what an administrator took away since."""

    def grant(apps, schema_editor=None) -> None:
        _ensure_permissions(apps)
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
        group, _created = Group.objects.get_or_create(name="operators")
        group.permissions.add(*Permission.objects.filter(
            content_type__app_label__in=OPERATOR_APPS, codename__in=codenames))

    return grant


def sync_groups_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps

    sync_groups(apps, only_missing=True)
