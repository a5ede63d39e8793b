from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class WebConfig(AppConfig):
    """The interfaces as a Django app: its admin registrations and management commands."""

    name = "web"
    verbose_name = _("Berth")
