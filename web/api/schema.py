"""The OpenAPI schema says every answer the API gives, errors included.

drf-spectacular documents the success of an operation; the errors DRF and
Berth's views give come from here, so that a client (and the Schemathesis run
in tests/test_api_schema.py) can rely on the schema's list of status codes:

- 401 and 403 on every operation (token first: an anonymous call is a 401);
- 404 where the path names an object, and on paginated lists (a page past the
  end, or not a page number: DRF's "Invalid page.");
- 400 where the operation takes a body or query parameters;
- a body for each error code a view declared without one
  (`extend_schema(responses={409: None})`): the API answers every error with
  JSON, `{"detail": "…"}` or, for a 400, the fields' errors.

Only users who may read workloads get the schema and its Swagger UI
(`SchemaReaders`).
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import BasePermission

# What reading the schema takes: what listing the workloads takes.
SCHEMA_PERMISSION = "workloads.view_workload"


class SchemaReaders(BasePermission):
    """The schema maps the whole API: it is for those who may read workloads."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(SCHEMA_PERMISSION))


class ErrorSerializer(serializers.Serializer):
    """An error: what went wrong, for people. Some errors add fields (a 409 may link the
    deploy or restore that holds the workload, a target's failure its `code`)."""

    detail = serializers.CharField()


FIELD_ERRORS = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description=_("Bad input: the errors by field name (`non_field_errors` for the whole "
                  "request), or `detail` and a `code`."),
)

# The error codes every operation may answer, and the description each gets.
DESCRIPTIONS = {
    "400": _("Bad input; nothing was changed."),
    "401": _("No credentials, or credentials that are not valid."),
    "403": _("The user lacks the permission this operation needs."),
    "404": _("No such object (or no such page of a list)."),
    "409": _("The request conflicts with the current state (a deploy, restore or copy "
             "under way, or records that must go first)."),
    "413": _("The upload is larger than the limit."),
    "428": _("The confirmation header is missing or is not the workload's path."),
    "502": _("A backup target did not do what was asked."),
    "503": _("The Docker engine could not do what was asked; nothing was changed."),
    "507": _("The server lacks the free space to do this."),
}


# A time of day as DRF writes and reads it ("03:00", "03:00:00"): JSON Schema's "time"
# format wants an offset ("03:00:00Z"), which a time in a policy's own zone has not.
TIME_OF_DAY = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"
BLANK = {"type": "string", "maxLength": 0}


class BerthSchema(AutoSchema):
    """drf-spectacular's AutoSchema, with the errors described in the module docstring."""

    def _insert_field_validators(self, field, schema) -> None:
        super()._insert_field_validators(field, schema)
        # A blank field with a pattern becomes oneOf [pattern, blank], which "" matches
        # twice when the pattern takes it too: either will do.
        if schema.get("oneOf", [None])[-1] == BLANK:
            schema["anyOf"] = schema.pop("oneOf")
        if schema.get("format") == "time":
            del schema["format"]
            schema["pattern"] = TIME_OF_DAY

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if "content" in responses.get(code, {}):
                continue  # the view documents this error's body itself
            body = FIELD_ERRORS if code == "400" else ErrorSerializer
            response = self._get_response_for_code(body, code, direction="response")
            response["description"] = responses.get(code, {}).get("description") \
                or DESCRIPTIONS.get(code, "")
            responses[code] = response
        return operation

    def _error_codes(self, operation: dict) -> list[str]:
        parameters = operation.get("parameters", [])
        codes = ["401", "403"]
        in_path = any(parameter["in"] == "path" for parameter in parameters)
        query = {parameter["name"] for parameter in parameters if parameter["in"] == "query"}
        if in_path or "page" in query:
            codes.append("404")
        if "requestBody" in operation or query - {"page"}:
            codes.append("400")
        declared = [code for code in operation["responses"] if code.startswith(("4", "5"))]
        return sorted({*codes, *declared})
