"""The copy policy at work: once a snapshot is ready, a copy to every target its rules name.

Called where a snapshot becomes ready (the capture body, for every kind, and
the import). The copies are queued after the transaction commits, and
nothing here can fail the snapshot: a copy that cannot be queued is logged,
and the snapshot stays ready. The rules are CopyRule (backups/models.py): a
workload's own, or its project's default; docs/backups.md says which kinds.
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import IntegrityError, transaction

from backups.models import CopyRule, SnapshotCopy
from lib import taskqueue
from snapshots.models import Snapshot

logger = logging.getLogger(__name__)


def queue_copies(snapshot: Snapshot) -> None:
    """After the current transaction commits (at once outside one): queue `snapshot`'s
    copies by the policy. Never raises."""
    try:
        transaction.on_commit(partial(_queue, snapshot.pk))
    except Exception:  # noqa: BLE001 - a snapshot never fails for its copies
        logger.exception("the copies of snapshot %s could not be queued", snapshot.pk)


def _queue(snapshot_id: int) -> None:
    try:
        snapshot = (Snapshot.objects.select_related("workload__stage")
                    .filter(pk=snapshot_id, state=Snapshot.State.READY).first())
        targets = CopyRule.objects.targets_for(snapshot) if snapshot is not None else []
    except Exception:  # noqa: BLE001 - as above
        logger.exception("the copy policy of snapshot %s could not be read", snapshot_id)
        return
    for target in targets:
        try:
            with transaction.atomic():
                row = SnapshotCopy.of(snapshot, target)
                row.save()
        except IntegrityError:
            continue  # a copy of it to this target is already under way
        except Exception:  # noqa: BLE001 - one target's trouble does not stop the others
            logger.exception("a copy of snapshot %s to target %s could not be queued",
                             snapshot_id, target.pk)
            continue
        try:
            taskqueue.enqueue(taskqueue.COPY, row.pk, name=f"copy-{row.pk}")
        except Exception:  # noqa: BLE001 - the row no worker takes fails as lost, and is retried
            logger.exception("copy %s of snapshot %s could not be enqueued", row.pk, snapshot_id)
