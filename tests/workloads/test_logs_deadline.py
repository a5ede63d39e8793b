"""A logs request waits for a stalled engine one deadline in all, not one per replica: a fake
engine on a Unix socket answers each log read with one line and then nothing."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from engine import logs
from workloads.models import Container

pytestmark = pytest.mark.django_db

DEADLINE = 1.0


def _frame(text: bytes) -> bytes:
    payload = b"2026-12-06T23:00:00.000000001Z " + text + b"\n"
    return struct.pack(">BxxxL", 1, len(payload)) + payload


def _answer(conn: socket.socket) -> None:
    while True:
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(4096)
            if not got:
                return
            data += got
        if b"/logs" not in data.split(b"\r\n")[0]:  # /version, /containers/<id>/json
            body = json.dumps({"ApiVersion": "1.45", "Config": {"Tty": False},
                               "State": {"FinishedAt": "0001-01-01T00:00:00Z"}}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            continue
        payload = _frame(b"one line, then nothing")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(payload), payload))
        time.sleep(3600)


@pytest.fixture
def stalled_engine(tmp_path, monkeypatch):
    path = str(tmp_path / "docker.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(64)

    def serve() -> None:
        while True:
            conn, _address = server.accept()
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setattr(logs, "DEADLINE_SECONDS", DEADLINE)
    return path


def test_twenty_stalled_replicas_hold_the_request_one_deadline(stalled_engine, workload):
    for replica in range(1, 21):
        Container.objects.create(workload=workload, docker_id=f"c{replica:02d}",
                                 name=f"c{replica}", replica=replica, image_reference="x")
    started = time.monotonic()
    found = logs.read(workload=workload)
    assert time.monotonic() - started < 2 * DEADLINE  # not 20: one deadline for all
    assert found.cut is True
    # The first replica's line came before the stall; the replicas the deadline left
    # unread keep the cursor where it was, so a follow asks again for their lines.
    assert [(line.replica, line.text) for line in found.lines] == [(1, "one line, then nothing")]
    assert found.cursor == 0
    assert logs.read(workload=workload, after=5).cursor == 5
