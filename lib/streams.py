"""Reading a slow stream ahead, in a thread, while its reader works on what came before.

pyrage asks its input for 8 KiB at a time; served straight from an HTTP
stream, the download and the decryption take turns. `ReadAhead` reads the
source in large chunks in a thread of its own (at most `depth` chunks ahead,
so memory stays bounded) and serves reads of any size from them.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

_END = object()


class ReadAhead:
    """A readable over `source`; an error of the source is raised by the read that meets it."""

    def __init__(self, source: BinaryIO, *, chunk: int = 1 << 20, depth: int = 8) -> None:
        self._source, self._chunk = source, chunk
        self._queue: queue.Queue = queue.Queue(depth)
        self._current, self._offset = memoryview(b""), 0
        self._ended = False
        self.error: BaseException | None = None  # what the source raised, once met
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="berth-read-ahead", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(self._chunk)
                if not data:
                    break
                self._put(data)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self._put(exc)
            return
        self._put(_END)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, amount: int = -1) -> bytes:
        if self._ended:
            return b""
        if self._offset >= len(self._current):
            item = self._queue.get()
            if item is _END:
                self._ended = True
                return b""
            if isinstance(item, BaseException):
                self._ended, self.error = True, item
                raise item
            self._current, self._offset = memoryview(item), 0
        if amount is None or amount < 0:
            amount = len(self._current) - self._offset
        piece = self._current[self._offset:self._offset + amount]
        self._offset += len(piece)
        return piece.tobytes()

    def close(self) -> None:
        """Stop reading ahead (the source itself is the caller's to close)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
