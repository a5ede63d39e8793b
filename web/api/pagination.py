"""The API's page numbers: DRF's, refusing the values the schema does not allow.

DRF reads a missing or empty `?page=` as page 1, `?page=last` as the last page,
and drops a bad `?page_size=` silently (or caps it). The schema promises a
page number of 1 or more and a page size within bounds, so anything else is
refused: a bad page with DRF's own 404 ("Invalid page."), a bad page size with
a 400 that names it.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination

_NUMBER = re.compile(r"[0-9]{1,18}")


def _positive(raw: str) -> int | None:
    """The number `raw` spells in plain digits, if it is 1 or more."""
    if not _NUMBER.fullmatch(raw):
        return None
    number = int(raw)
    return number if number >= 1 else None


class PageNumbers(PageNumberPagination):
    """`?page=N` (1 or more), as DRF paginates; see the module docstring."""

    last_page_strings = ()

    def get_page_number(self, request, paginator) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        number = _positive(raw)
        if number is None:
            raise NotFound(self.invalid_page_message)
        return number

    def get_page_size(self, request) -> int | None:
        # A subclass that takes ?page_size= sets max_page_size too.
        if not self.page_size_query_param or self.page_size_query_param not in \
                request.query_params:
            return self.page_size
        size = _positive(request.query_params[self.page_size_query_param])
        if size is None or size > self.max_page_size:
            raise ValidationError({self.page_size_query_param: [
                _("Give a page size from 1 to %(most)d.") % {"most": self.max_page_size}]})
        return size

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters


class HistoryPages(PageNumbers):
    """A workload's deploy history: 20 a page, `?page_size=` up to 100."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
