"""Request bodies are capped before anything reads them.

Django parses a form body (and spools a multipart upload to a temporary file)
the first time anything asks for `request.POST` — the CSRF check does, for an
anonymous client too. So every request that declares a body larger than
BERTH_MAX_BODY_BYTES is refused with 413 before any view or middleware reads
it, except for the views that stream large uploads under their own guard (the
snapshot import: web/api/uploads.py). docs/security.md says more.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _

# URL names of the views that take large bodies and guard them themselves.
LARGE_BODY_VIEWS = frozenset({"workload-snapshot-import-archive"})


class BodyLimitMiddleware:
    """Refuse a declared body over the cap; placed before the CSRF middleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.resolver_match and request.resolver_match.url_name in LARGE_BODY_VIEWS:
            return None
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            declared = int(raw)
        except ValueError:
            return self._refuse(request, 400, _("The Content-Length header is not a number."))
        if declared > settings.BERTH_MAX_BODY_BYTES:
            return self._refuse(request, 413, _(
                "The request body is larger than Berth accepts (BERTH_MAX_BODY_BYTES)."
            ))
        return None

    @staticmethod
    def _refuse(request, status: int, message: str) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": message}, status=status)
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
