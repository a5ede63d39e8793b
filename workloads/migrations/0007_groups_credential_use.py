from django.db import migrations

from workloads.groups import sync_groups


class Migration(migrations.Migration):
    """Give the operators group the new use_registrycredential permission."""

    dependencies = [("workloads", "0006_deploy_single_flight")]

    operations = [migrations.RunPython(sync_groups, migrations.RunPython.noop)]
