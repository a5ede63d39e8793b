"""The API: a workload's logs (GET /api/workloads/{id}/logs and its plain-text download)."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from engine import logs
from web.api.permissions import ActionPermission
from workloads.models import Workload


class LogQuerySerializer(serializers.Serializer):
    """What a logs request may ask; the bounds are engine/logs.py's."""

    tail = serializers.IntegerField(min_value=1, required=False)
    # Not trimmed before the length check: the schema's maxLength counts every character.
    since = serializers.CharField(required=False, allow_blank=True, max_length=40,
                                  trim_whitespace=False)
    after = serializers.IntegerField(
        required=False, min_value=0,
        help_text=_("The cursor of an earlier answer: only newer lines."))
    replica = serializers.IntegerField(required=False, min_value=1)
    previous = serializers.BooleanField(default=False)
    search = serializers.CharField(required=False, allow_blank=True, max_length=logs.MAX_SEARCH,
                                   trim_whitespace=False)

    def validate_tail(self, value: int) -> int:
        limit = self.context["max_tail"]
        if value > limit:
            raise serializers.ValidationError(
                _("At most %(limit)d lines at a time.") % {"limit": limit})
        return value

    def validate_since(self, value: str):
        if not value.strip():
            return None  # `?since=` from a form left empty: no bound
        try:
            return logs.parse_since(value)
        except logs.LogsRefused as exc:
            raise serializers.ValidationError(str(exc)) from None


class LogLineSerializer(serializers.Serializer):
    time = serializers.DateTimeField()
    replica = serializers.IntegerField()
    text = serializers.CharField()


class WorkloadLogSerializer(serializers.Serializer):
    lines = LogLineSerializer(many=True)
    cursor = serializers.CharField(help_text=_("Pass it back as `after` to follow."))
    cut = serializers.BooleanField()
    gone = serializers.ListField(child=serializers.IntegerField())


# What `since` takes, as a pattern (engine/logs.py, parse_since): empty; a duration within
# ten years; an ISO 8601 date, with a time and an offset or not. The pattern leaves out
# days after the 28th, which the calendar may not have, and years before 1970 or after 2999.
SINCE = (r"^\s*([0-9]{1,4}[smh]|[0-9]{1,3}d"
         r"|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
         r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?"
         r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?)?)?\s*$")


def _parameters(*, default_tail: int, max_tail: int) -> list[OpenApiParameter]:
    """The query as LogQuerySerializer reads it, with its bounds."""
    return [
        OpenApiParameter("tail", {"type": "integer", "minimum": 1, "maximum": max_tail},
                         default=default_tail),
        OpenApiParameter("since", {"type": "string", "maxLength": 40, "pattern": SINCE},
                         description="30s, 15m, 2h, 7d, or an ISO 8601 time"),
        OpenApiParameter("after", {"type": "integer", "minimum": 0},
                         description="a cursor from an earlier answer"),
        OpenApiParameter("replica", {"type": "integer", "minimum": 1}),
        OpenApiParameter("previous", bool),
        OpenApiParameter("search", {"type": "string", "maxLength": logs.MAX_SEARCH}),
    ]


# The engine's errors reading the logs are a 503 (web/api/errors.py).
_ENGINE_DOWN = {503: None}


class WorkloadLogsView(APIView):
    """The last lines of a workload's replicas, merged by time (docs/logs.md)."""

    permission_classes = [ActionPermission]
    action = "logs"
    action_permissions = {"logs": "workloads.view_logs"}
    max_tail = logs.MAX_TAIL
    default_tail = logs.DEFAULT_TAIL
    max_bytes = logs.ANSWER_BYTES

    def _read(self, request, pk: int) -> logs.WorkloadLog:
        workload = get_object_or_404(Workload, pk=pk)
        query = LogQuerySerializer(data=request.query_params,
                                   context={"max_tail": self.max_tail})
        query.is_valid(raise_exception=True)
        asked = query.validated_data
        try:
            return logs.read(
                workload=workload, tail=asked.get("tail", self.default_tail),
                since=asked.get("since"), after=asked.get("after"),
                replica=asked.get("replica"), previous=asked["previous"],
                search=asked.get("search", ""), max_bytes=self.max_bytes,
            )
        except logs.LogsRefused as exc:
            raise ValidationError({"replica": [str(exc)]}) from None

    @extend_schema(parameters=_parameters(default_tail=logs.DEFAULT_TAIL, max_tail=logs.MAX_TAIL),
                   responses={200: WorkloadLogSerializer, **_ENGINE_DOWN})
    def get(self, request, pk: int) -> Response:
        found = self._read(request, pk)
        return Response(WorkloadLogSerializer(found).data)


class WorkloadLogsDownloadView(WorkloadLogsView):
    """The same lines as plain text, as an attachment (up to DOWNLOAD_TAIL lines)."""

    max_tail = default_tail = logs.DOWNLOAD_TAIL
    max_bytes = logs.DOWNLOAD_BYTES

    @extend_schema(
        parameters=_parameters(default_tail=logs.DOWNLOAD_TAIL, max_tail=logs.DOWNLOAD_TAIL),
        responses={(200, "text/plain"): str, **_ENGINE_DOWN})
    def get(self, request, pk: int) -> HttpResponse:
        found = self._read(request, pk)
        return logs_attachment(found, pk)


def logs_attachment(found: logs.WorkloadLog, pk: int) -> HttpResponse:
    response = HttpResponse(logs.as_text(found), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="workload-{pk}-logs.txt"'
    return response
