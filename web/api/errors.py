"""One place that maps errors raised below the API onto DRF responses."""

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from engine.deploys import RemovalRefused, RollbackRefused
from lib import runtime
from lib.locks import LockTimeout
from snapshots.errors import ArchiveError, InsufficientSpace
from workloads.models import DeployInProgress, Workload


class EngineUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("The Docker engine could not do what was asked; nothing was changed.")
    default_code = "engine_unavailable"


class InsufficientStorage(exceptions.APIException):
    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    default_detail = _("The server lacks the free space to do this.")
    default_code = "insufficient_storage"


# The header that confirms a request replacing a workload's data: its path (project/stage/slug).
CONFIRM_HEADER = "X-Confirm-Restore"
# The header that confirms a DELETE of a workload or of one of its snapshots: the workload's path
# too, since a slug alone is unique only within its stage.
DELETE_HEADER = "X-Confirm-Delete"


class PreconditionRequired(exceptions.APIException):
    status_code = 428
    default_detail = _("This request needs a confirmation header.")
    default_code = "precondition_required"


def confirm_delete(request: Request, workload: Workload, message: str) -> None:
    """Raise 428 unless the request's X-Confirm-Delete header is the workload's path.

    `message` is translated and has `%(header)s` and `%(path)s` in it, so the refusal says
    what to send.
    """
    if request.headers.get(DELETE_HEADER) != workload.path:
        raise PreconditionRequired(message % {"header": DELETE_HEADER, "path": workload.path})


def query_flag(request: Request, name: str) -> bool:
    """`?name=` as a boolean (`1`, `0`, `true`, `false`; left out is false); 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    try:
        return serializers.BooleanField().to_internal_value(raw)
    except exceptions.ValidationError:
        raise exceptions.ValidationError({name: [_("Give 1 or 0.")]}) from None


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The request conflicts with the current state of the resource.")
    default_code = "conflict"


class TargetFailed(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = _("A backup target did not do what was asked.")
    default_code = "target_failed"


@extend_schema(exclude=True)
class NoSuchEndpoint(APIView):
    """Any path under /api/ that names no endpoint: a JSON 404 like the API's own, once the
    caller is authenticated (an anonymous call is a 401, as everywhere in the API)."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        raise exceptions.NotFound()

    get = post = put = patch = delete = head = http_method_not_allowed


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, Http404 | ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, InsufficientSpace):
        exc = InsufficientStorage(detail=str(exc))
    elif isinstance(exc, ArchiveError):
        # A hostile, corrupt or oversized archive: the reason is for the uploader.
        exc = exceptions.ValidationError(detail={"archive": [str(exc)]})
    elif isinstance(exc, RollbackRefused | RemovalRefused):
        exc = Conflict(detail=str(exc))
    elif isinstance(exc, DeployInProgress):
        active = reverse("api:deploy-detail", args=[exc.active.pk]) if exc.active else None
        exc = Conflict(detail={"detail": str(exc), "active_deploy": active})
    elif isinstance(exc, LockTimeout):
        exc = Conflict(_("The workload is busy with a deploy or restore; retry later."))
    elif isinstance(exc, runtime.EngineError):
        exc = EngineUnavailable()
    elif isinstance(exc, IntegrityError):
        # Two writers raced past validation (same slug, same host port): the
        # database refused the second; its raw text is not for the client.
        exc = Conflict(_("Another request changed the same records at the same time; retry."))
    return drf_exception_handler(exc, context)
