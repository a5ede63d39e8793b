"""Failed logins are limited per account and per client address (django-axes).

The login page, the admin's login and the API's token authentication count
against the same limits; docs/security.md says why and how to unlock.
"""

from __future__ import annotations

import math

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header

# The credentials a failed token authentication is counted under: there is no
# account to blame, only the address.
TOKEN_CREDENTIALS = {"berth_token": True}


def client_address(request) -> str | None:
    """The peer's address. Berth trusts no forwarded-for header: a client could write one."""
    return request.META.get("REMOTE_ADDR")


def lockout_parameters(request_or_attempt, credentials=None) -> list[str]:
    """Count a login by its account and by its address; a bad token by its address alone.

    Counting a token failure under an empty account would lock every token
    client out together.
    """
    if credentials and credentials.get("berth_token"):
        return ["ip_address"]
    return ["username", "ip_address"]


def lockout_response(request, credentials=None):
    """The page a refused login gets: 429, in the user's language, with the wait."""
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60),
    }
    return render(request, "registration/locked_out.html", context, status=429)


class LockedOut(exceptions.APIException):
    status_code = 429
    default_detail = _("Too many failed logins from this address. Try again later.")
    default_code = "locked_out"


class LimitedTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, refused for a locked-out address; each bad token counts."""

    def authenticate(self, request):
        words = get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None  # not a token: another authentication's business
        django_request = request._request
        if not AxesProxyHandler.is_allowed(django_request, TOKEN_CREDENTIALS):
            raise LockedOut()
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            user_login_failed.send(
                sender=type(self), credentials=dict(TOKEN_CREDENTIALS), request=django_request
            )
            if getattr(django_request, "axes_locked_out", False):
                # The middleware would answer Axes' own page; the API answers in JSON.
                django_request.axes_locked_out = False
                raise LockedOut() from None
            raise
