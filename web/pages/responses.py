"""Answers the pages share."""

from __future__ import annotations

from django.http import HttpResponseBadRequest


def bad_request(message: str) -> HttpResponseBadRequest:
    """A 400 whose text is plain: a form's error may repeat what the request sent, so
    it must never be served as HTML (a reflected script)."""
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
