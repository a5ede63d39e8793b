"""The scene of the rollback-with-data tests: v1 released on its data, then v2 "migrated" it.

A workload (two volumes) is deployed at v1 with "back up before deploy" on, so
deploy v1 has a pre-deploy snapshot of the data it first started on. Then the
moving tag goes to v2, v2 is deployed, and the running v2 container writes a
marker into both volumes — its "migration" (the test images are plain httpd
servers with no start-up script of their own, so the marker is written by
`docker exec` in the v2 container as soon as it runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine import deploys
from snapshots.models import Snapshot
from tests.conftest import move_current_tag
from tests.fixtures import forking
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.restoring import NEW, NEW_CONFIG, engine_containers, in_container, trees
from workloads.models import DeployRecord, Workload

BIG = os.urandom(3 << 20)  # so that "restore.extracting" falls in the middle of the archive
MIGRATION = "echo migrated-by-v2 > /data/migrated && echo mode=v2 > /config/app.conf"


@dataclass
class Released:
    workload: Workload
    paths: list[Path]
    v1: DeployRecord          # the deploy to roll back to
    v2: DeployRecord          # what runs now, on data it migrated
    snapshot: Snapshot        # v1's pre-deploy snapshot
    target_trees: list[dict]  # the data as v1 first found it (= the snapshot)
    current_trees: list[dict]  # the data v2 left


def release_v1_then_v2(make_workload) -> Released:
    """Deploy v1 and v2 (the moving tag is at v1 when called; the caller puts it back)."""
    workload = make_workload(auto_backup_before_deploy=True)
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW | {"big.bin": BIG})
    fill(config, NEW_CONFIG)
    target_trees = trees([data, config])
    v1 = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert v1.outcome == DeployRecord.Outcome.SUCCEEDED, v1.failure_code
    snapshot = Snapshot.objects.get(deploy=v1)
    assert snapshot.is_ready and snapshot.kind == Snapshot.Kind.PRE_DEPLOY
    move_current_tag("v2")
    v2 = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert v2.outcome == DeployRecord.Outcome.SUCCEEDED, v2.failure_code
    assert v2.pinned_reference != v1.pinned_reference
    [running] = engine_containers(workload)
    in_container(running.id, MIGRATION)
    current_trees = trees([data, config])
    assert current_trees != target_trees
    workload.refresh_from_db()
    return Released(workload=workload, paths=[data, config], v1=v1, v2=v2, snapshot=snapshot,
                    target_trees=target_trees, current_trees=current_trees)


# A rollback with data in its own process (the crash points act only there).
CHILD_ROLLBACK = """
import os, sys
import django
django.setup()
from engine import restores
from lib import exchange
from workloads.models import Workload
if os.environ.get("TEST_NO_EXCHANGE") == "1":
    exchange.supported = lambda directory: False
workload = Workload.objects.with_parents().get(pk=int(sys.argv[1]))
job = restores.rollback_with_data(workload=workload, deploy_id=int(sys.argv[2]),
                                  configuration=True)
print(job.pk, job.outcome, flush=True)
"""


def spawn_rollback(released: Released, **env: str) -> forking.Child:
    """A rollback with data in a child forked from this test (it may be told to crash)."""
    return forking.run_code(CHILD_ROLLBACK, str(released.workload.pk), str(released.v1.pk),
                            **env)
