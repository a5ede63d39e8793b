from django.urls import path

from snapshots import views

urlpatterns = [
    path("workloads/<int:pk>/snapshots", views.snapshots_panel, name="snapshots-panel"),
    path("workloads/<int:pk>/snapshots/take", views.snapshot_take, name="snapshot-take"),
    path("workloads/<int:pk>/snapshots/<int:sid>/delete", views.snapshot_delete,
         name="snapshot-delete"),
    path("workloads/<int:pk>/snapshots/<int:sid>/download", views.snapshot_download,
         name="snapshot-download"),
    path("workloads/<int:pk>/snapshots/<int:sid>/restore", views.snapshot_restore,
         name="snapshot-restore"),
]
