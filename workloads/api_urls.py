from rest_framework.routers import SimpleRouter

from workloads import api

router = SimpleRouter(trailing_slash=False)
router.register("workloads", api.WorkloadViewSet, basename="workload")
router.register("deploys", api.DeployViewSet, basename="deploy")

app_name = "api"
urlpatterns = router.urls
