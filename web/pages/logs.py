"""HTMX pages: a workload's logs panel, its follow poll and its download."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from engine import logs
from lib import runtime
from web.api.logs import logs_attachment
from workloads.models import Workload

TAILS = (50, 200, 1000)
# The rows the browser keeps while following; the oldest go first.
PAGE_ROWS = 2000


class LogsForm(forms.Form):
    """What the panel may ask: the same bounds as the API (engine/logs.py)."""

    tail = forms.TypedChoiceField(choices=[(n, n) for n in TAILS], coerce=int, required=False,
                                  empty_value=logs.DEFAULT_TAIL)
    since = forms.CharField(required=False, max_length=40)
    search = forms.CharField(required=False, max_length=logs.MAX_SEARCH, strip=False)
    replica = forms.IntegerField(required=False, min_value=1)
    previous = forms.BooleanField(required=False)
    follow = forms.BooleanField(required=False)
    after = forms.IntegerField(required=False, min_value=0,
                               label=gettext_lazy("cursor"))

    def clean_since(self):
        value = self.cleaned_data["since"]
        if not value.strip():
            return None
        try:
            return logs.parse_since(value)
        except logs.LogsRefused as exc:
            raise forms.ValidationError(str(exc)) from None

    def query(self, **changes: object) -> str:
        """The form's own fields (not the cursor) as a query string, with `changes`."""
        fields = {name: self.data.get(name, "") for name in
                  ("tail", "since", "search", "replica")}
        fields |= {name: "on" for name in ("previous", "follow") if self.cleaned_data.get(name)}
        fields |= changes
        return urlencode({k: v for k, v in fields.items() if v not in ("", None)})


def _read(request: HttpRequest, pk: int, *, tail: int | None = None,
          max_bytes: int = logs.ANSWER_BYTES) -> tuple[dict, logs.WorkloadLog | None, str]:
    workload = get_object_or_404(Workload.objects.with_parents(), pk=pk)
    form = LogsForm(request.GET)
    context = {"workload": workload, "form": form, "page_rows": PAGE_ROWS}
    if not form.is_valid():
        return context, None, " ".join(e for errors in form.errors.values() for e in errors)
    asked = form.cleaned_data
    try:
        found = logs.read(
            workload=workload, tail=tail or asked["tail"], since=asked["since"],
            after=asked["after"], replica=asked["replica"], previous=asked["previous"],
            search=asked["search"], max_bytes=max_bytes,
        )
    except logs.LogsRefused as exc:
        return context, None, str(exc)
    except runtime.EngineError:
        return context, None, _("The Docker engine could not be asked for the logs.")
    context |= {"log": found, "follow": asked["follow"] and not asked["previous"],
                "previous": asked["previous"],
                "query": form.query(), "follow_query": form.query(after=found.cursor)}
    return context, found, ""


@require_GET
@login_required
@permission_required("workloads.view_logs", raise_exception=True)
def workload_logs(request: HttpRequest, pk: int) -> HttpResponse:
    """The panel's lines for the form's choices (and its follow poll, if asked)."""
    context, _found, error = _read(request, pk)
    return render(request, "workloads/_logs.html#log-view", context | {"logs_error": error})


@require_GET
@login_required
@permission_required("workloads.view_logs", raise_exception=True)
def workload_logs_follow(request: HttpRequest, pk: int) -> HttpResponse:
    """The lines after the poll's cursor, appended, and the poll again with the new cursor."""
    context, found, error = _read(request, pk)
    if found is None:
        return HttpResponseBadRequest(error)
    return render(request, "workloads/_logs.html#log-follow", context)


@require_GET
@login_required
@permission_required("workloads.view_logs", raise_exception=True)
def workload_logs_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The lines as a plain-text attachment: up to DOWNLOAD_TAIL lines."""
    _context, found, error = _read(request, pk, tail=logs.DOWNLOAD_TAIL,
                                   max_bytes=logs.DOWNLOAD_BYTES)
    if found is None:
        return HttpResponseBadRequest(error)
    return logs_attachment(found, pk)
