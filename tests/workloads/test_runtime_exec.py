"""runtime.exec_in: a command inside a running container, with a hard timeout and a masked tail."""

from __future__ import annotations

import struct
import subprocess
import uuid

import pytest

from lib import runtime
from tests.fixtures import images

SECRET = "exec-secret-0f6a41"


def frame(data: bytes, stream: int = 1) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_the_tail_joins_frames_split_anywhere():
    tail = runtime._ExecTail(100)
    stream = frame(b"hello ") + frame(b"world\n", 2)
    for i in range(len(stream)):
        tail.feed(stream[i:i + 1])
    assert tail.text([]) == "hello world\n"


def test_the_tail_keeps_the_end_and_never_half_a_secret():
    tail = runtime._ExecTail(runtime.EXEC_TAIL_CHARS + len(SECRET))
    # The secret straddles the start of the kept bytes: what is left of it must go too.
    body = b"x" * 50_000 + SECRET.encode() + b"y" * (runtime.EXEC_TAIL_CHARS - 5)
    for start in range(0, len(body), 7000):
        tail.feed(frame(body[start:start + 7000]))
    text = tail.text([SECRET])
    assert len(text) <= runtime.EXEC_TAIL_CHARS
    assert text.endswith("y" * 100)
    assert not any(SECRET[i:] in text for i in range(len(SECRET) - 3))


@pytest.fixture
def container(docker):
    name = f"berth-exec-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--label",
                    runtime.instance_label(), images.BUSYBOX, "sleep", "3600"],
                   check=True, capture_output=True)
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_it_returns_the_exit_code_and_the_masked_output(container):
    result = runtime.exec_in(container, f"echo out; echo {SECRET} >&2; exit 4", timeout=10,
                             secrets=[SECRET])

    assert (result.exit_code, result.timed_out, result.ok) == (4, False, False)
    # stdout and stderr are two pipes: their lines come in either order.
    assert sorted(result.output.splitlines()) == ["[redacted]", "out"]


def test_a_command_past_its_timeout_is_killed_with_what_it_started(container):
    result = runtime.exec_in(container, "sleep 300 & sleep 300", timeout=1)

    assert result.timed_out and not result.ok
    assert result.seconds < 120  # not a timing: far from the 300 s the command asks for
    processes = subprocess.run(["docker", "exec", container, "ps", "-o", "stat,args"],
                               capture_output=True, text=True, check=True).stdout
    assert not [line for line in processes.splitlines()
                if "sleep 300" in line and not line.startswith("Z")], processes


def test_a_stopped_container_is_an_engine_error(container):
    subprocess.run(["docker", "stop", "-t", "0", container], check=True, capture_output=True)

    with pytest.raises(runtime.EngineError):
        runtime.exec_in(container, "true", timeout=5)
