"""Archive files go with their rows, once the deleting transaction has committed.

A post_delete receiver runs for every deleted row — `Snapshot.delete()`, a
queryset or admin bulk delete, and the cascade from a workload, stage or
project — because Django gives up fast deletes for a model with receivers.
The file is removed on commit: a rolled-back delete keeps both.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction

from snapshots import storage


def remove_archive_after_commit(sender, instance, **kwargs) -> None:
    if instance.archive:
        transaction.on_commit(partial(storage.remove_archive, instance.workload_id,
                                      instance.archive))


def remove_workload_dir_after_commit(sender, instance, **kwargs) -> None:
    transaction.on_commit(partial(storage.remove_workload_dir, instance.pk))
