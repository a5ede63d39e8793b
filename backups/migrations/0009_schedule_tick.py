"""The django-q2 schedule that fires engine.tasks.run_schedule_tick every minute."""

from django.db import migrations

NAME = "berth-backup-schedules"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=NAME,
        defaults={"func": "engine.tasks.run_schedule_tick", "schedule_type": "C",
                  "cron": "* * * * *", "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0008_backup_policies"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create, remove)]
