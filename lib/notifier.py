"""Sending one notification through Apprise (the only module that imports `apprise`).

An Apprise URL names a service and carries its credentials (a webhook's
token, a mail server's password), so it is a secret: the caller decrypts it
for the call and never keeps it. What fails is told by a fixed code; the
service's own words (which may quote the URL) are on NotifyError.raw, for a
log line after redaction.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
from apprise.apprise import AppriseResultStatus
from django.utils.translation import gettext_lazy as _


class NotifyError(Exception):
    messages = {
        "invalid_url": _("Apprise does not recognise this URL."),
        "not_delivered": _("The service did not accept the notification (no answer, or an "
                           "error)."),
        "timeout": _("The service did not answer in time."),
        "unreadable_secret": _("The channel's URL cannot be decrypted (BERTH_ENCRYPTION_KEY "
                               "changed); give it again."),
        "disabled": _("The channel is disabled."),
        "interrupted": _("The sending stopped (its worker stopped, or its task was lost)."),
        "internal": _("Berth could not send the notification (an internal error)."),
    }

    def __init__(self, code: str, raw: str = "") -> None:
        self.code = code if code in self.messages else "internal"
        self.raw = raw
        super().__init__(self.code)

    @property
    def message(self) -> str:
        return str(self.messages[self.code])


def valid(url: str) -> bool:
    """Whether Apprise knows what to do with `url` (nothing is sent)."""
    return apprise.Apprise.instantiate(url) is not None


def secret_parts(url: str) -> list[str]:
    """The URL and the parts of it that may be credentials, for redacting log lines: the
    password, the user, the path's segments and the query's values (tokens live there)."""
    found = [url]
    try:
        parts = urlsplit(url)
        found += [unquote(parts.password or ""), unquote(parts.username or "")]
        found += [unquote(s) for s in parts.path.split("/")]
        found += [v for _k, v in parse_qsl(parts.query)]
    except ValueError:
        pass
    # Short fragments (a port, "json") are not worth masking and would mangle the line.
    return [s for s in found if len(s) >= 6]


def send(url: str, *, title: str, body: str, timeout: float) -> None:
    """Send `title` and `body` to the service `url` names, waiting at most about `timeout`
    seconds; NotifyError with a fixed code when it was not delivered."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        raise NotifyError("invalid_url")
    # Each connection and read is bounded, and so is the whole call.
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    sender = apprise.Apprise()
    sender.add(plugin)
    result = sender.notify(body=body, title=title, timeout=timeout * 2)
    if result:
        return
    logs = "; ".join(entry.message for entry in result.logs())
    if result.status == AppriseResultStatus.TIMEOUT or result.timeout_count:
        raise NotifyError("timeout", logs)
    raise NotifyError("not_delivered", logs)
