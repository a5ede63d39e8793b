"""Copies made before copy policies: their kind and snapshot time, for remote retention.

From the snapshot while it exists; otherwise from the object's name, which
says both (`<UTC time>-<kind>-<snapshot id>-c<copy id>.tar.zst[.age]`). A copy
whose kind cannot be told stays without one and is never pruned.
"""

import re
from datetime import UTC, datetime

from django.db import migrations

NAME = re.compile(r"(?:^|/)(\d{8}T\d{6}Z)-(manual|pre_deploy|pre_restore|scheduled)-\d+-c\d+\.")


def fill(apps, schema_editor):
    SnapshotCopy = apps.get_model("backups", "SnapshotCopy")
    for row in SnapshotCopy.objects.filter(kind="").select_related("snapshot"):
        if row.snapshot is not None:
            row.kind = "imported" if row.snapshot.imported else row.snapshot.kind
            row.taken = row.snapshot.created
        elif found := NAME.search(row.remote_key):
            row.taken = datetime.strptime(found[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            row.kind = found[2]
        else:
            continue
        row.save(update_fields=["kind", "taken"])


class Migration(migrations.Migration):

    dependencies = [
        ("backups", "0005_copy_policy"),
        ("snapshots", "0004_job_owner"),
    ]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
