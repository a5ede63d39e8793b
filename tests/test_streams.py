"""lib/streams.py: reading ahead and writing behind in threads, errors included."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from lib.streams import ReadAhead, WriteBehind


@pytest.mark.parametrize("sizes", [[1], [7, 8192, 3], [1 << 20], [-1]])
def test_it_serves_reads_of_any_size_in_order(sizes):
    data = os.urandom(3 * (1 << 20) + 12345)
    out = bytearray()
    with ReadAhead(io.BytesIO(data), chunk=1 << 16, depth=2) as ahead:
        n = 0
        while chunk := ahead.read(sizes[n % len(sizes)]):
            out += chunk
            n += 1
        assert ahead.read(10) == b""
    assert bytes(out) == data


def test_an_error_of_the_source_is_raised_by_the_read_that_meets_it():
    class Failing:
        calls = 0

        def read(self, amount):
            self.calls += 1
            if self.calls > 2:
                raise OSError(5, "Input/output error")
            return b"x" * amount

    ahead = ReadAhead(Failing(), chunk=4, depth=1)
    assert ahead.read(8) == b"xxxx" and ahead.read(8) == b"xxxx"
    with pytest.raises(OSError, match="Input/output"):
        ahead.read(8)
    assert isinstance(ahead.error, OSError) and ahead.read(8) == b""
    ahead.close()


def test_closing_early_stops_the_thread_reading_ahead():
    class Endless:
        def read(self, amount):
            return b"y" * amount

    ahead = ReadAhead(Endless(), chunk=1024, depth=2)
    assert ahead.read(10) == b"y" * 10
    ahead.close()
    assert not ahead._thread.is_alive()


def test_whole_chunks_are_served_as_they_came():
    data = os.urandom(3 << 16)
    with ReadAhead(io.BytesIO(data), chunk=1 << 16, depth=2) as ahead:
        pieces = [ahead.read(1 << 20) for _ in range(3)]
        assert ahead.read(1 << 20) == b""
    assert [len(p) for p in pieces] == [1 << 16] * 3 and b"".join(pieces) == data


def test_writing_behind_hashes_and_writes_everything_in_order():
    pieces = [os.urandom(n) for n in (1, 1 << 20, 0, 12345)]
    sink = io.BytesIO()
    with WriteBehind(sink, depth=1) as behind:
        for piece in pieces:
            assert behind.write(piece) == len(piece)
    data = b"".join(pieces)
    assert sink.getvalue() == data
    assert (behind.size, behind.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_sink_that_takes_a_part_gets_the_rest():
    class Partial(io.BytesIO):
        def write(self, data):
            return super().write(bytes(data)[:3])

    sink = Partial()
    with WriteBehind(sink) as behind:
        behind.write(b"0123456789")
    assert sink.getvalue() == b"0123456789" and behind.size == 10


def test_an_error_of_the_sink_is_raised_to_the_writer():
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    behind = WriteBehind(Full(), depth=1)
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # never blocks on the full queue of a sink that failed
            behind.write(b"x" * 1024)
        behind.close()
    with pytest.raises(OSError, match="No space"):
        behind.close()
    assert not behind._thread.is_alive()


def test_leaving_on_an_error_drops_what_is_queued():
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), WriteBehind(sink) as behind:
        behind.write(b"a")
        raise RuntimeError("the decryption failed")
    assert not behind._thread.is_alive()
