from rest_framework.routers import SimpleRouter

from snapshots.api import RestoreJobViewSet, SnapshotViewSet
from workloads import api

router = SimpleRouter(trailing_slash=False)
router.register("workloads", api.WorkloadViewSet, basename="workload")
router.register("deploys", api.DeployViewSet, basename="deploy")
router.register("restores", RestoreJobViewSet, basename="restore")
router.register(
    r"workloads/(?P<workload_pk>[0-9]+)/snapshots", SnapshotViewSet, basename="workload-snapshot"
)

app_name = "api"
urlpatterns = router.urls
