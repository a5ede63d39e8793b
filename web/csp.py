"""The Content-Security-Policy header: no inline script or style on any page.

Berth's pages keep their behaviour in static/js and their looks in
static/css, and htmx is told not to evaluate code (the htmx-config meta in
templates/base.html), so the strict policy holds everywhere but the API's
Swagger UI: its page has a <style> block and its bundle sets inline styles,
so /api/docs may use inline styles (never inline script). docs/security.md.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

STRICT = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])
SWAGGER = STRICT.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
SWAGGER_PATH = "/api/docs"


def policy_for(path: str) -> str:
    return SWAGGER if path == SWAGGER_PATH else STRICT


class ContentSecurityPolicyMiddleware:
    """Sets the policy on every response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = policy_for(request.path_info)
        return response
