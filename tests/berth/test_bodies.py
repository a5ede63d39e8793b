"""Bodies over BERTH_MAX_BODY_BYTES are refused before anything reads them (web/bodies.py).

Over a real socket to the live server: the client declares 200 MB, sends a few
bytes, and must get its 413 without sending the rest, with nothing spooled.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

DECLARED = 200 << 20


@pytest.fixture
def spool(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    return tmp_path


def post_head(live_server, path: str, length: int = DECLARED) -> tuple[int, str]:
    """Send a multipart POST's head and a few body bytes; return the status and the body."""
    address = urlsplit(live_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: multipart/form-data; boundary=berth\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + b'--berth\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
            + b"x" * 4096
        )
        received = b""
        while b"\r\n\r\n" not in received or len(received) < 200:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/workloads/1/snapshots/take"])
def test_a_page_refuses_a_large_body_before_reading_it(live_server, spool, path):
    status, body = post_head(live_server, path)

    assert status == 413
    assert "BERTH_MAX_BODY_BYTES" in body
    assert list(spool.iterdir()) == []


def test_the_api_refuses_a_large_body_in_json(live_server, spool):
    status, body = post_head(live_server, "/api/workloads")

    assert status == 413 and '"detail"' in body and "BERTH_MAX_BODY_BYTES" in body
    assert list(spool.iterdir()) == []


def test_a_body_under_the_cap_reaches_the_view(live_server, spool):
    # 4 KiB declared and sent: the CSRF check reads it and refuses the anonymous post.
    status, _body = post_head(live_server, "/login/", length=4096 + 66)

    assert status == 403


def test_the_snapshot_import_keeps_its_own_guard(live_server, spool):
    # Not capped here: the import's own guard refuses an anonymous caller unread.
    status, _body = post_head(live_server, "/api/workloads/1/snapshots/import")

    assert status in {401, 403}
    assert list(spool.iterdir()) == []


def test_a_malformed_length_is_a_bad_request(client):
    response = client.post("/login/", data=b"", content_type="text/plain",
                           CONTENT_LENGTH="lots")

    assert response.status_code == 400
