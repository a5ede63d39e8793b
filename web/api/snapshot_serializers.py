"""API representations of snapshots."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from snapshots.models import RestoreJob, Snapshot


class SnapshotSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    user = serializers.CharField(source="user.get_username", read_only=True, default=None,
                                 allow_null=True)
    failure = serializers.CharField(source="failure_text", read_only=True)
    progress = serializers.SerializerMethodField()
    volumes = serializers.SerializerMethodField()
    skipped = serializers.SerializerMethodField()

    class Meta:
        model = Snapshot
        fields = [
            "id", "url", "workload", "kind", "state", "imported", "created", "finished", "user",
            "deploy", "size", "sha256", "data_bytes", "file_count", "volume_count",
            "skipped_count", "skipped", "changed_count", "much_smaller", "progress", "failure",
            "failure_code", "volumes", "download_url",
        ]

    def get_url(self, snapshot: Snapshot) -> str:
        return reverse("api:workload-snapshot-detail", args=[snapshot.workload_id, snapshot.pk])

    def get_download_url(self, snapshot: Snapshot) -> str | None:
        if not snapshot.is_ready:
            return None
        return reverse("api:workload-snapshot-download", args=[snapshot.workload_id, snapshot.pk])

    def get_progress(self, snapshot: Snapshot) -> dict:
        return {"bytes_done": snapshot.bytes_done, "bytes_total": snapshot.bytes_total}

    def get_volumes(self, snapshot: Snapshot) -> list[dict]:
        keys = ("index", "scope", "source", "target", "files", "directories", "bytes")
        return [{key: volume.get(key) for key in keys} for volume in snapshot.volumes]

    def get_skipped(self, snapshot: Snapshot) -> list[dict]:
        """The skipped entries the manifest lists (at most 1000; `skipped_count` has all)."""
        return snapshot.skipped[:1000]


class SnapshotListSerializer(SnapshotSerializer):
    """A snapshot in a list: without the `skipped` entries (the detail has them)."""

    class Meta(SnapshotSerializer.Meta):
        fields = [name for name in SnapshotSerializer.Meta.fields if name != "skipped"]


class RestoreJobSerializer(serializers.ModelSerializer):
    """A restore to follow: its phase, the bytes unpacked so far, and how it ended."""

    url = serializers.SerializerMethodField()
    phase_display = serializers.CharField(source="get_phase_display", read_only=True)
    progress = serializers.SerializerMethodField()
    reason = serializers.CharField(source="reason_text", read_only=True)
    user = serializers.CharField(source="user.get_username", read_only=True, default=None,
                                 allow_null=True)

    class Meta:
        model = RestoreJob
        fields = [
            "id", "url", "workload", "snapshot", "state", "phase", "phase_display", "progress",
            "outcome", "reason", "pre_restore_snapshot", "deploy", "kept_paths", "user",
            "created", "started", "finished", "rollback_to",
        ]

    def get_url(self, job: RestoreJob) -> str:
        return reverse("api:restore-detail", args=[job.pk])

    def get_progress(self, job: RestoreJob) -> dict:
        return {"bytes_done": job.bytes_done, "bytes_total": job.bytes_total}
