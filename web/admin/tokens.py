"""API tokens stay out of the admin: DRF's admin lists every key in clear, and a key is shown
once, to its owner, in the pages (web/pages/tokens.py)."""

from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)
