"""Berth's interfaces: the API, the HTMX pages, the admin and the management commands.

Each checks input and permission and calls one engine entry point.
"""
