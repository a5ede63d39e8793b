"""A real restore tells the channels how it ended, once (docs/notifications.md)."""

from __future__ import annotations

import pytest

from alerts.models import Event, Notification
from engine import restores
from tests.alerts.conftest import channel, webhook  # noqa: F401 - the receiver fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def test_a_finished_restore_is_told_once(snapshotted, webhook):  # noqa: F811
    workload, _paths, snapshot, _wanted = snapshotted
    channel("hook", webhook.url, [Event.RESTORE_FINISHED, Event.RESTORE_FAILED])

    job = restores.restore(workload=workload, snapshot=snapshot)

    [message] = webhook.received
    assert message["body"]["title"] == f"[Berth] Restore finished: {workload}"
    assert f"Restore #{job.pk} of snapshot #{snapshot.pk}: Restored." in \
        message["body"]["message"]
    assert Notification.objects.get().key == f"restore-{job.pk}"


def test_a_refused_restore_is_told_as_failed(snapshotted, webhook):  # noqa: F811
    workload, _paths, snapshot, _wanted = snapshotted
    channel("hook", webhook.url, [Event.RESTORE_FAILED])
    workload.volumes.order_by("id").last().delete()

    restores.restore(workload=workload, snapshot=snapshot)

    [message] = webhook.received
    assert message["body"]["title"].startswith("[Berth] Restore failed")
    assert "Code: failed" in message["body"]["message"]
    assert "holds volume" not in message["body"]["message"]  # the reason's details stay home
