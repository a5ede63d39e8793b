"""Schedule the restore sweep: every minute, the task worker finishes or undoes a killed restore.

(`make run` also sweeps once before anything serves; this covers a task
worker killed while Berth keeps running.) No task timeout: see
snapshots/tasks.py.
"""

from django.db import migrations
from django.utils import timezone

NAME = "berth-restore-sweep"
FUNC = "snapshots.tasks.sweep_restores"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={
            "func": FUNC,
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": 1,
            "repeats": -1,
            "kwargs": "q_options={'timeout': -1, 'task_name': 'restore-sweep'}",
            "next_run": timezone.now(),
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("snapshots", "0003_groups_restore_jobs"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
