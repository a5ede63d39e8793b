"""lib/streams.py: reading ahead in a thread, errors included."""

from __future__ import annotations

import io
import os

import pytest

from lib.streams import ReadAhead


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
