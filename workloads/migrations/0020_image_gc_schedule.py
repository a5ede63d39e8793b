"""The django-q2 schedule that fires engine.tasks.run_image_gc once a day."""

from django.db import migrations

NAME = "berth-image-gc"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=NAME,
        defaults={"func": "engine.tasks.run_image_gc", "schedule_type": "C",
                  "cron": "17 3 * * *", "repeats": -1},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("workloads", "0019_pulled_images"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create, remove)]
