"""The admin's delete page for a workload or a snapshot takes the workload's path typed in.

The API (X-Confirm-Delete) and the pages ask the same: a click on "Yes, I'm sure" alone
is too easy for what cannot be undone (docs/security.md, "Confirmations").
"""

from __future__ import annotations

from django.contrib.admin.utils import unquote
from django.http import QueryDict

from web.pages.editing import PathConfirmationForm
from workloads.models import Workload


class TypedPathDelete:
    """A ModelAdmin mixin: the delete page asks for the path of `confirming_workload(obj)`."""

    delete_confirmation_template = "admin/typed_delete_confirmation.html"

    def confirming_workload(self, obj) -> Workload:
        raise NotImplementedError

    def get_deleted_objects(self, objs, request):
        # The engine removes what the row owns (ledger rows, events, containers, copies),
        # which the admin offers no delete of on their own: the permission to delete
        # the row itself is the whole check, as in the API and the pages.
        deleted, counts, _lacking, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is None:  # the admin's own "does not exist" answer
            return super().delete_view(request, object_id, extra_context)
        expected = self.confirming_workload(obj).path
        posted = request.method == "POST"
        form = PathConfirmationForm(request.POST if posted else None, expected=expected)
        if posted and not form.is_valid():
            # Not confirmed: the admin shows its confirmation page again, with the
            # error, and deletes nothing (it deletes only on a non-empty POST).
            request.POST = QueryDict()
        context = {**(extra_context or {}), "confirm_form": form, "confirm_path": expected}
        return super().delete_view(request, object_id, context)
