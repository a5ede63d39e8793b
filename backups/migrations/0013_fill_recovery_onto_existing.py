"""Recoveries asked for before `onto_existing` existed: one onto an existing workload is a
row whose workload is set and which created nothing (a re-creating one always lists the
workload it created). A queued one whose workload was deleted meanwhile cannot be told
apart any more and stays as it was."""

from django.db import migrations


def fill(apps, schema_editor):
    BackupRecovery = apps.get_model("backups", "BackupRecovery")
    onto = [row.pk for row in BackupRecovery.objects.filter(into__isnull=False)
            .only("pk", "created_rows") if not row.created_rows]
    BackupRecovery.objects.filter(pk__in=onto).update(onto_existing=True)


class Migration(migrations.Migration):

    dependencies = [
        ("backups", "0012_recovery_onto_existing"),
    ]

    operations = [
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
