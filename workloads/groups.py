"""The two built-in groups and what they may do.

Used by data migrations: each migration that adds a permission calls
`sync_groups`, so existing installations get it too.
"""

OPERATOR_APPS = ("workloads", "snapshots")


def sync_groups(apps, schema_editor) -> None:
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations ran; create them
    # now so the groups can be given them in this migration.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    berth = Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS)
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*berth)
    viewers, _ = Group.objects.get_or_create(name="viewers")
    viewers.permissions.add(*berth.filter(codename__startswith="view_"))
