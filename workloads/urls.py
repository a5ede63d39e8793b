from django.urls import path

from workloads import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("workloads/<int:pk>/", views.workload_detail, name="workload-detail"),
    path("workloads/<int:pk>/state", views.workload_state, name="workload-state"),
    path("workloads/<int:pk>/deploy", views.workload_deploy, name="workload-deploy"),
    path("workloads/<int:pk>/rollback", views.workload_rollback, name="workload-rollback"),
    path("workloads/<int:pk>/metrics", views.workload_metrics, name="workload-metrics"),
    path("deploys/<int:pk>/", views.deploy_detail, name="deploy-detail"),
    path("deploys/<int:pk>/panel", views.deploy_panel, name="deploy-panel"),
]
