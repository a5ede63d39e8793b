"""Rollback with data and configuration: what changes between the request and the swap
(review of #15). Real Docker and registry, as tests/snapshots/test_rollback_with_data.py.

The configuration is checked at the request and again by the restore's pre-flight,
under the lock, before anything is touched: a rule that refuses it now, or a deploy
row pruned from the history meanwhile, fails the job with the data and the code as
they were. Another rollback is refused while a rollback with data is queued.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from engine import deploys, restores, tasks
from snapshots.models import RestoreJob
from tests.conftest import container_image_digest
from tests.snapshots.restoring import engine_containers, trees
from tests.snapshots.rolling_back import release_v1_then_v2
from workloads.models import DeployRecord, EnvVar, PortMapping

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def released(current_tag, make_workload, monkeypatch):
    """v1 ran with MODE=one on 127.0.0.1:18931; the workload has MODE=two and no port now.

    The tasks are run by hand here (the queue holds them back)."""
    monkeypatch.setattr("engine.queue.enqueue", lambda task, row, *, name: None)
    released = release_v1_then_v2(make_workload)
    v1 = released.v1
    v1.configuration["env"] = [{"name": "MODE", "value": "one"}]
    v1.configuration["ports"] = [{"host_ip": "127.0.0.1", "host_port": 18931,
                                  "container_port": 80, "protocol": "tcp"}]
    DeployRecord.objects.filter(pk=v1.pk).update(configuration=v1.configuration)
    EnvVar.objects.create(workload=released.workload, name="MODE", value="two")
    return released


def assert_untouched(released, job: RestoreJob, reason: str) -> None:
    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.FAILED
    assert reason in job.reason_text
    assert trees(released.paths) == released.current_trees
    [running] = engine_containers(released.workload)
    assert container_image_digest(running.id) == released.v2.pinned_reference
    assert EnvVar.objects.get(workload=released.workload, name="MODE").value == "two"


def test_it_sets_the_configuration_back_with_the_code_and_the_data(released):
    job = restores.request_rollback_with_data(workload=released.workload,
                                              deploy_id=released.v1.pk, configuration=True)

    tasks.run_restore(job.pk)

    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED, job.reason_text
    assert job.deploy.rollback_restored == DeployRecord.RollbackRestored.CODE_CONFIGURATION_DATA
    assert EnvVar.objects.get(workload=released.workload, name="MODE").value == "one"
    assert released.workload.ports.get().host_port == 18931
    assert trees(released.paths) == released.target_trees


def test_a_rule_that_refuses_the_configuration_by_then_fails_it_before_the_swap(
    released, make_workload
):
    job = restores.request_rollback_with_data(workload=released.workload,
                                              deploy_id=released.v1.pk, configuration=True)
    # Meanwhile another workload took the host port v1 published.
    squatter = make_workload(slug="squatter")
    PortMapping.objects.create(workload=squatter, host_ip="127.0.0.1", host_port=18931,
                               container_port=80)

    tasks.run_restore(job.pk)

    assert_untouched(released, job, "not allowed any more")


def test_a_deploy_pruned_from_the_history_meanwhile_fails_it_before_the_swap(released):
    job = restores.request_rollback_with_data(workload=released.workload,
                                              deploy_id=released.v1.pk, configuration=True)
    with override_settings(BERTH_DEPLOY_HISTORY_KEEP=1):
        deploys.request_deploy(workload=released.workload, reason=DeployRecord.Reason.MANUAL)
    assert not DeployRecord.objects.filter(pk=released.v1.pk).exists()

    tasks.run_restore(job.pk)

    assert_untouched(released, job, "no longer in the history")


def test_another_rollback_waits_for_a_rollback_with_data(released):
    restores.request_rollback_with_data(workload=released.workload,
                                        deploy_id=released.v1.pk, configuration=True)

    with pytest.raises(deploys.RollbackRefused, match="rollback with data"):
        deploys.request_rollback(workload=released.workload, deploy_id=released.v2.pk)
    assert EnvVar.objects.get(workload=released.workload, name="MODE").value == "two"
