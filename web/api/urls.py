from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from web.api import errors, logs, workloads
from web.api.alerts import NotificationChannelViewSet, NotificationViewSet
from web.api.backups import (
    BackupRecoveryViewSet,
    BackupTargetViewSet,
    CopyRuleViewSet,
    RestoreDrillViewSet,
)
from web.api.projects import ProjectViewSet, StageViewSet
from web.api.schedules import BackupPolicyViewSet
from web.api.snapshots import RestoreJobViewSet, SnapshotViewSet

router = SimpleRouter(trailing_slash=False)
router.register("workloads", workloads.WorkloadViewSet, basename="workload")
router.register("deploys", workloads.DeployViewSet, basename="deploy")
router.register("restores", RestoreJobViewSet, basename="restore")
router.register("backup-targets", BackupTargetViewSet, basename="backup-target")
router.register("recoveries", BackupRecoveryViewSet, basename="recovery")
router.register("drills", RestoreDrillViewSet, basename="drill")
router.register("copy-rules", CopyRuleViewSet, basename="copy-rule")
router.register("backup-policies", BackupPolicyViewSet, basename="backup-policy")
router.register("notification-channels", NotificationChannelViewSet,
                basename="notification-channel")
router.register("notifications", NotificationViewSet, basename="notification")
router.register("projects", ProjectViewSet, basename="project")
router.register("stages", StageViewSet, basename="stage")
# The workload's id in at most 18 digits, as a snapshot's (web/api/snapshots.py).
router.register(
    r"workloads/(?P<workload_pk>[0-9]{1,18})/snapshots", SnapshotViewSet,
    basename="workload-snapshot",
)

app_name = "api"
urlpatterns = [
    *router.urls,
    path("workloads/<int:pk>/logs", logs.WorkloadLogsView.as_view(), name="workload-logs"),
    path("workloads/<int:pk>/logs/download", logs.WorkloadLogsDownloadView.as_view(),
         name="workload-logs-download"),
    # Last: any other path under /api/ is a JSON 404 (after authentication), not a page.
    re_path(r"^[\s\S]*\Z", errors.NoSuchEndpoint.as_view(), name="no-such-endpoint"),
]
