from django.db import migrations

from workloads.groups import sync_groups


class Migration(migrations.Migration):
    """Give the operators group the new rollback_workload permission."""

    dependencies = [("workloads", "0003_deploy_history_rollback")]

    operations = [migrations.RunPython(sync_groups, migrations.RunPython.noop)]
