"""The snapshots API, nested under a workload: /api/workloads/{id}/snapshots[/{sid}]."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, QueryDict
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import CSRFCheck, SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings

from backups.models import SnapshotCopy
from engine import captures, copies, copy_upkeep, imports
from engine import restores as restore_engine
from snapshots import storage
from snapshots.errors import PreflightError
from snapshots.models import RestoreJob, Snapshot
from web.api.backups import CopyRequestSerializer, SnapshotCopySerializer
from web.api.errors import (
    CONFIRM_HEADER,
    Conflict,
    PreconditionRequired,
    TargetFailed,
    confirm_delete,
    query_flag,
)
from web.api.permissions import ActionPermission
from web.api.snapshot_serializers import (
    RestoreJobSerializer,
    SnapshotListSerializer,
    SnapshotSerializer,
)
from web.api.uploads import FIELD, SnapshotUploadHandler, StagedUpload
from web.api.workloads import CONFIRM_DELETE
from workloads.models import Workload

WORKLOAD_ID = OpenApiParameter("workload_pk", OpenApiTypes.INT, OpenApiParameter.PATH,
                               description="The workload's id.")
WITH_COPIES = "with_copies"


class IgnoreAccept(BaseContentNegotiation):
    """A download answers whatever the client accepts: the file, or an error as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class _WithoutBody:
    """The request as the CSRF check sees it for an import: no form fields.

    Django's check reads `request.POST` (the whole multipart body) for a form
    token before it looks at the header; an import must be authorised before
    its body is read, so its token has to come in the X-CSRFToken header.
    """

    POST = QueryDict()

    def __init__(self, request) -> None:
        object.__setattr__(self, "_wrapped", request)

    def __getattr__(self, name: str):
        return getattr(self._wrapped, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._wrapped, name, value)


class HeaderCSRFSessionAuthentication(SessionAuthentication):
    """Session authentication whose CSRF check never reads the request body."""

    def enforce_csrf(self, request) -> None:
        check = CSRFCheck(lambda request: None)
        plain = _WithoutBody(request._request)
        check.process_request(plain)
        reason = check.process_view(plain, None, (), {})
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")


def _import_authenticators() -> list[type]:
    return [HeaderCSRFSessionAuthentication if cls is SessionAuthentication else cls
            for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES]


class ImportSerializer(serializers.Serializer):
    archive = serializers.FileField(help_text="A snapshot archive (.tar.zst).")


@extend_schema_view(
    list=extend_schema(parameters=[WORKLOAD_ID], responses=SnapshotListSerializer(many=True)),
    retrieve=extend_schema(parameters=[WORKLOAD_ID]),
    destroy=extend_schema(parameters=[WORKLOAD_ID, OpenApiParameter(
        WITH_COPIES, OpenApiTypes.BOOL, OpenApiParameter.QUERY,
        description="Also remove the snapshot's verified copies from their backup targets "
                    "(needs delete_snapshotcopy).",
    ), CONFIRM_DELETE], responses={204: None, 404: None, 409: None, 428: None, 502: None}),
)
class SnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = SnapshotSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "delete", "head", "options"]
    # At most 18 digits: a longer id is no row's (SQLite refuses to compare it), so a 404.
    lookup_value_regex = "[0-9]{1,18}"
    action_permissions = {
        "list": "snapshots.view_snapshot",
        "retrieve": "snapshots.view_snapshot",
        "create": "workloads.snapshot_workload",
        "download": "workloads.snapshot_workload",
        "import_archive": "workloads.snapshot_workload",
        "destroy": "snapshots.delete_snapshot",
        "restore": "workloads.restore_workload",
        "copies": "backups.view_snapshotcopy",
        "copy_again": "backups.add_snapshotcopy",
    }
    _upload_handler: SnapshotUploadHandler | None = None

    def get_workload(self) -> Workload:
        return get_object_or_404(Workload.objects.with_parents(), pk=self.kwargs["workload_pk"])

    def get_serializer_class(self):
        return SnapshotListSerializer if self.action == "list" else SnapshotSerializer

    def get_queryset(self):
        return Snapshot.objects.filter(workload_id=self.kwargs["workload_pk"]).select_related(
            "user"
        )

    def initial(self, request, *args, **kwargs) -> None:
        if self.action == "import_archive":
            # Nothing of the body is read before the caller is known to be allowed
            # to import: authentication (CSRF from the header only, see
            # HeaderCSRFSessionAuthentication) and the permission come first.
            self.perform_authentication(request)
            self.check_permissions(request)
            self._upload_handler = SnapshotUploadHandler(
                request._request, limit=settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES
            )
            request._request.upload_handlers = [self._upload_handler]
        super().initial(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            # Whatever an import did not keep, however the request ended (an
            # exception while parsing the body never reaches finalize_response).
            if self._upload_handler is not None:
                self._upload_handler.discard()
                self._upload_handler = None

    def list(self, request, *args, **kwargs):
        """The workload's snapshots, newest first."""
        self.get_workload()
        return super().list(request, *args, **kwargs)

    def _located(self, snapshot: Snapshot, code: int) -> Response:
        url = reverse("api:workload-snapshot-detail", args=[snapshot.workload_id, snapshot.pk])
        return Response(SnapshotSerializer(snapshot).data, status=code, headers={"Location": url})

    @extend_schema(request=None, parameters=[WORKLOAD_ID],
                   responses={202: SnapshotSerializer, 409: None})
    def create(self, request, *args, **kwargs):
        """Queue a snapshot; follow it at the returned snapshot's `url`. 409 while one runs."""
        try:
            snapshot = captures.request_snapshot(workload=self.get_workload(), user=request.user)
        except captures.SnapshotBusy as exc:
            raise Conflict(str(exc)) from None
        snapshot.refresh_from_db()
        return self._located(snapshot, status.HTTP_202_ACCEPTED)

    def perform_destroy(self, snapshot: Snapshot) -> None:
        with_copies = self._with_copies()
        # After the permissions (?with_copies's too) and the lookups: 401/403, 404, then 428.
        confirm_delete(self.request, self.get_workload(), _(
            "Confirm the delete with the header %(header)s: %(path)s (the workload's path); "
            "the snapshot's archive is removed for good."))
        try:
            captures.delete_snapshot(snapshot=snapshot, user=self.request.user,
                                     with_copies=with_copies)
        except captures.SnapshotBusy as exc:
            raise Conflict(str(exc)) from None
        except copy_upkeep.CopiesNotRemoved as exc:
            raise TargetFailed(
                _("The copy on target “%(target)s” could not be removed (%(reason)s); the "
                  "snapshot is kept. Retry when the target answers.")
                % {"target": exc.row.target.name, "reason": exc.error.message}) from None

    def _with_copies(self) -> bool:
        """`?with_copies=1`: remove the snapshot's verified copies from their targets too,
        which needs the permission to delete copies."""
        wanted = query_flag(self.request, WITH_COPIES)
        if wanted and not self.request.user.has_perm("backups.delete_snapshotcopy"):
            raise PermissionDenied(_("Removing copies from backup targets needs the permission "
                                     "to delete snapshot copies."))
        return wanted

    @extend_schema(parameters=[WORKLOAD_ID], responses={
        (200, "application/zstd"): OpenApiTypes.BINARY, 404: None, 409: None,
    })
    @action(detail=True, methods=["get"], content_negotiation_class=IgnoreAccept)
    def download(self, request, *args, **kwargs):
        """The archive itself; its SHA-256 is in the ETag header."""
        snapshot = self.get_object()
        if not snapshot.is_ready:
            raise Conflict(_("This snapshot has no archive to download (it is not ready)."))
        try:
            archive = storage.open_archive(snapshot.workload_id, snapshot.archive)
        except FileNotFoundError:
            raise Conflict(_("This snapshot's archive file is missing.")) from None
        workload = self.get_workload()
        name = f"{workload.container_prefix}-snapshot-{snapshot.pk}.tar.zst"
        response = FileResponse(archive, as_attachment=True, filename=name,
                                content_type="application/zstd")
        response["ETag"] = f'"{snapshot.sha256}"'
        return response

    @extend_schema(
        parameters=[WORKLOAD_ID],
        request={"multipart/form-data": ImportSerializer},
        responses={201: SnapshotSerializer, 400: None, 413: None, 507: None},
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser],
            authentication_classes=_import_authenticators())
    def import_archive(self, request, *args, **kwargs):
        """Upload an archive (multipart field `archive`); kept only once it validates in full."""
        workload = self.get_workload()
        upload = request.FILES.get(FIELD)
        if not isinstance(upload, StagedUpload):
            raise ValidationError({FIELD: [_("Send the archive as a file in the field "
                                             "“archive”.")]})
        snapshot = imports.import_snapshot(workload=workload, staged=upload.staged,
                                           user=request.user)
        return self._located(snapshot, status.HTTP_201_CREATED)

    @extend_schema(parameters=[WORKLOAD_ID], request=None,
                   responses={200: SnapshotCopySerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)
    def copies(self, request, *args, **kwargs):
        """The snapshot's copies on backup targets, newest first."""
        snapshot = self.get_object()
        rows = SnapshotCopy.objects.filter(snapshot=snapshot).select_related("target")
        return Response(SnapshotCopySerializer(rows, many=True).data)

    @extend_schema(parameters=[WORKLOAD_ID], request=CopyRequestSerializer,
                   responses={202: SnapshotCopySerializer, 409: None})
    @copies.mapping.post
    def copy_again(self, request, *args, **kwargs):
        """Queue a copy of the snapshot to a target (`{"target": id}`)."""
        snapshot = self.get_object()
        body = CopyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            row = copies.request_copy(snapshot=snapshot, target=body.validated_data["target"],
                                      user=request.user)
        except copies.CopyRefused as exc:
            raise Conflict(str(exc)) from None
        row.refresh_from_db()
        return Response(SnapshotCopySerializer(row).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        parameters=[WORKLOAD_ID, OpenApiParameter(
            CONFIRM_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
            description="The workload's path, project/stage/workload: confirms that its volumes "
                        "are replaced.",
        )],
        responses={202: RestoreJobSerializer, 404: None, 409: None, 428: None},
    )
    @action(detail=True, methods=["post"])
    def restore(self, request, *args, **kwargs):
        """Replace the workload's volumes with this snapshot; follow the returned job's `url`.

        The workload stops for a moment while its volumes are swapped and comes
        back on the version it ran; its current data is kept as a
        `pre_restore` snapshot. 428 without the confirmation header, 409 while
        another restore of the workload is queued or running (with a link to it).
        """
        workload = self.get_workload()
        snapshot = self.get_object()
        if request.headers.get(CONFIRM_HEADER) != workload.path:
            raise PreconditionRequired(
                _("Confirm the restore with the header %(header)s: %(path)s (the workload's "
                  "path); its volumes will be replaced by the snapshot's data.")
                % {"header": CONFIRM_HEADER, "path": workload.path}
            )
        try:
            job = restore_engine.request_restore(workload=workload, snapshot=snapshot,
                                                  user=request.user)
        except restore_engine.RestoreBusy as exc:
            return _busy(exc)
        except PreflightError as exc:
            raise Conflict(str(exc)) from None
        job.refresh_from_db()
        url = reverse("api:restore-detail", args=[job.pk])
        return Response(RestoreJobSerializer(job).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})


def _busy(exc) -> Response:
    """409, with a link to the restore that holds the workload."""
    active = exc.active
    url = reverse("api:restore-detail", args=[active.pk]) if active is not None else None
    headers = {"Location": url} if url else {}
    return Response({"detail": str(exc), "active_restore": url},
                    status=status.HTTP_409_CONFLICT, headers=headers)


class RestoreJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                        viewsets.GenericViewSet):
    """Restores, newest first; one to follow after POST …/snapshots/{sid}/restore."""

    serializer_class = RestoreJobSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": "snapshots.view_restorejob",
                          "retrieve": "snapshots.view_restorejob"}

    def get_queryset(self):
        return RestoreJob.objects.select_related("user")
