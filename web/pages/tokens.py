"""A user's own API token, made and revoked in the pages.

The API authenticates with DRF's token authentication (one token per user,
rest_framework.authtoken). The key is shown once, in the answer to the POST
that made it; the page never shows it again, only when it was made.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

TOKENS = "registration/tokens.html"


@require_GET
@login_required
def token_page(request: HttpRequest) -> HttpResponse:
    token = Token.objects.filter(user=request.user).only("created").first()
    return render(request, TOKENS, {"token": token})


@require_POST
@login_required
def token_create(request: HttpRequest) -> HttpResponse:
    """Make the user's token and show its key, this once; refused while one exists."""
    token, created = Token.objects.get_or_create(user=request.user)
    if not created:
        messages.error(request, _("You already have an API token: revoke it to make a new one."))
        return redirect("tokens")
    return render(request, TOKENS, {"token": token, "new_key": token.key})


@require_POST
@login_required
def token_revoke(request: HttpRequest) -> HttpResponse:
    """Delete the user's own token (only theirs: the request names no token)."""
    deleted, _rows = Token.objects.filter(user=request.user).delete()
    if deleted:
        messages.success(request, _("Your API token was revoked: requests that use it are "
                                    "refused from now on."))
    return redirect("tokens")
