from django.db import migrations

from workloads.groups import sync_groups


class Migration(migrations.Migration):
    """Operators get every restore-job permission, viewers may view restore jobs."""

    dependencies = [("snapshots", "0002_restore_job"), ("workloads", "0012_groups_snapshots")]

    operations = [migrations.RunPython(sync_groups, migrations.RunPython.noop)]
