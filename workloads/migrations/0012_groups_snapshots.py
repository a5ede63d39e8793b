from django.db import migrations

from workloads.groups import sync_groups


class Migration(migrations.Migration):
    """Give the operators group the new snapshot_workload and restore_workload permissions."""

    dependencies = [("workloads", "0011_snapshot_settings"), ("snapshots", "0001_initial")]

    operations = [migrations.RunPython(sync_groups, migrations.RunPython.noop)]
