"""The query parameters that narrow a list to one owner's rows: read strictly, declared in
the schema with the bounds they are read with."""

from __future__ import annotations

import re

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

# A row id as the database keeps it (a signed 64-bit integer).
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def id_filter(name: str, description: str) -> OpenApiParameter:
    """`?name=ID` in the schema."""
    return OpenApiParameter(name, {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            OpenApiParameter.QUERY, description=description)


def wanted_id(request, name: str) -> int | None:
    """The id `?name=` asks for, None without one; 400 for anything but an id."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    # Plain ASCII digits: str.isdigit() also takes "²", which int() refuses.
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_ID:
        raise ValidationError({name: [_("Give an id.")]})
    return int(raw)
