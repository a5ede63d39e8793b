from django.urls import path

from web.pages import backups, recovery, snapshots, workloads

urlpatterns = [
    path("", workloads.dashboard, name="dashboard"),
    path("workloads/<int:pk>/", workloads.workload_detail, name="workload-detail"),
    path("workloads/<int:pk>/state", workloads.workload_state, name="workload-state"),
    path("workloads/<int:pk>/deploy", workloads.workload_deploy, name="workload-deploy"),
    path("workloads/<int:pk>/rollback", workloads.workload_rollback, name="workload-rollback"),
    path("workloads/<int:pk>/metrics", workloads.workload_metrics, name="workload-metrics"),
    path("deploys/<int:pk>/", workloads.deploy_detail, name="deploy-detail"),
    path("deploys/<int:pk>/panel", workloads.deploy_panel, name="deploy-panel"),
    path("workloads/<int:pk>/snapshots", snapshots.snapshots_panel, name="snapshots-panel"),
    path("workloads/<int:pk>/snapshots/take", snapshots.snapshot_take, name="snapshot-take"),
    path("workloads/<int:pk>/snapshots/<int:sid>/delete", snapshots.snapshot_delete,
         name="snapshot-delete"),
    path("workloads/<int:pk>/snapshots/<int:sid>/download", snapshots.snapshot_download,
         name="snapshot-download"),
    path("workloads/<int:pk>/snapshots/<int:sid>/restore", snapshots.snapshot_restore,
         name="snapshot-restore"),
    path("workloads/<int:pk>/snapshots/<int:sid>/copy", snapshots.snapshot_copy,
         name="snapshot-copy"),
    path("backups/targets/", backups.target_list, name="backup-targets"),
    path("backups/targets/add", backups.target_add, name="backup-target-add"),
    path("backups/targets/<int:pk>/", backups.target_edit, name="backup-target-edit"),
    path("backups/targets/<int:pk>/check", backups.target_check, name="backup-target-check"),
    path("backups/recover/", recovery.recover, name="recover"),
    path("backups/recover/start", recovery.recover_start, name="recover-start"),
    path("backups/recover/forget", recovery.recover_forget, name="recover-forget"),
    path("backups/recoveries/<int:pk>/", recovery.recovery_detail, name="recovery-detail"),
]
