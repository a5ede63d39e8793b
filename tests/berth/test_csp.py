"""The Content-Security-Policy header (web/csp.py) and the templates that live under it.

tests/browser/test_csp.py visits every page in Chromium and fails on any violation;
these are the fast checks: the header on every kind of response, and no inline code
in templates/ for the policy to block.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import Client, RequestFactory

from web.csp import HEADER, STRICT, SWAGGER, ContentSecurityPolicyMiddleware

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"
# Each what the policy blocks (or, for htmx, what needs eval, which it blocks too).
INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),
    "style block": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"\sstyle=", re.I),
    "event handler attribute": re.compile(r"\son[a-z]+=", re.I),
    "hx-on": re.compile(r"\shx-on", re.I),
    "htmx trigger filter": re.compile(r"hx-trigger=\"[^\"]*\[", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
    "js: value": re.compile(r"hx-(vals|headers)='js:", re.I),
}


def test_it_sends_the_strict_policy_on_pages_the_admin_and_refusals(client: Client, admin_user):
    assert STRICT == (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    )
    anonymous = {
        "/login/": 200, "/": 302, "/no-such-page/": 404, "/api/workloads": 401,
    }
    for url, status in anonymous.items():
        response = client.get(url)
        assert response.status_code == status, url
        assert response[HEADER] == STRICT, url

    client.force_login(admin_user)
    for url in ["/", "/admin/", "/admin/auth/user/", "/tokens/", "/api/workloads"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response[HEADER] == STRICT, url
    # A body over the cap is refused before the view; the refusal carries the policy too.
    response = client.post("/tokens/create", data=b"x", content_type="text/plain",
                           CONTENT_LENGTH=str(settings.BERTH_MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response[HEADER] == STRICT


def test_the_api_docs_may_use_inline_styles_but_never_inline_script(client: Client, admin_user):
    client.force_login(admin_user)
    page = client.get("/api/docs")
    assert page.status_code == 200 and page[HEADER] == SWAGGER
    assert "style-src 'self' 'unsafe-inline'" in SWAGGER and "script-src 'self';" in SWAGGER
    html = page.content.decode()
    assert not INLINE["inline script"].search(html), "the Swagger page has an inline script"
    # Its settings script comes from the same URL, as a file the policy allows.
    script = client.get("/api/docs?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/schema" in script.content.decode()


def test_it_keeps_a_policy_a_view_set_itself():
    own = "default-src 'none'"

    def view(request):
        response = HttpResponse("x")
        response[HEADER] = own
        return response

    response = ContentSecurityPolicyMiddleware(view)(RequestFactory().get("/"))
    assert response[HEADER] == own


def test_no_template_has_inline_code_the_policy_would_block():
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        for what, pattern in INLINE.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(TEMPLATES)}:{line}: {what}")
    assert found == [], "\n".join(found)
    assert len(list(TEMPLATES.rglob("*.html"))) > 30  # the walk found the templates
