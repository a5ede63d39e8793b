"""Real receivers on loopback: an HTTP webhook (http.server in a thread) and an SMTP server
(aiosmtpd), each on a free port, with credentials that must never show in a message."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from alerts.models import NotificationChannel

WEBHOOK_PASSWORD = "hook-pass-5c1d9e"
WEBHOOK_TOKEN = "tok8f3a7be2c91d"
SMTP_USER, SMTP_PASSWORD = "berth-mailer", "smtp-pass-2b7e41"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Webhook:
    """An HTTP receiver that records every POST; stopped and started again on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"json://berth:{WEBHOOK_PASSWORD}@127.0.0.1:{self.port}/hook/{WEBHOOK_TOKEN}"

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def webhook():
    hook = Webhook()
    hook.start()
    yield hook
    hook.stop()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = (auth_data.login, auth_data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=_authenticate, auth_require_tls=False)
    controller.start()
    mailbox.url = (f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{controller.port}"
                   f"?smtp=127.0.0.1&from=berth@example.com&to=ops@example.com&mode=insecure")
    yield mailbox
    controller.stop()


def channel(name: str, url: str, events: list[str], **fields) -> NotificationChannel:
    row = NotificationChannel(name=name, events=events, **fields)
    row.set_apprise_url(url)
    row.full_clean()
    row.save()
    return row
