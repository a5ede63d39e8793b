"""A stream's reading and writing in threads of their own, while the caller works between them.

A recovery downloads, decrypts, hashes and writes. `ReadAhead` reads the
source in large chunks in a thread of its own (at most `depth` chunks ahead,
so memory stays bounded) and serves reads of any size from them;
`WriteBehind` hashes and writes what it is given in another thread (at most
`depth` pieces behind). Network reads, SHA-256 and file writes release the
GIL, so the three overlap on as many cores as there are.
"""

from __future__ import annotations

import hashlib
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
        left = len(self._current) - self._offset
        if amount is None or amount < 0 or amount >= left:
            amount = left
            if self._offset == 0 and type(self._current.obj) is bytes:  # a whole chunk: no copy
                self._offset = left
                return self._current.obj
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


class WriteBehind:
    """A writable that hashes what it is given and writes it to `sink` in a thread.

    What `write()` is given is queued as it is: it must not change
    afterwards (bytes). `close()` waits until everything is written and
    raises what the sink raised (a later `write()` raises it too); leaving a
    `with` block on an exception drops what is still queued. `size` and
    `hexdigest()` tell what was written, once closed.
    """

    def __init__(self, sink, *, depth: int = 8) -> None:
        self._sink = sink
        self._queue: queue.Queue = queue.Queue(depth)
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None  # what the sink raised
        self._dropping = False
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="berth-write-behind",
                                        daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not _END:
            if self.error is not None or self._dropping:
                continue  # keep taking, so that a writer never waits on a full queue
            try:
                self._hash.update(item)
                written = self._sink.write(item)
                rest = memoryview(item)[len(item) if written is None else written:]
                while rest:  # a raw file may take a part only
                    rest = rest[self._sink.write(rest):]
            except BaseException as exc:  # noqa: BLE001 - raised to the writer
                self.error = exc
            else:
                self.size += len(item)

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        if data:
            self._queue.put(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Wait until everything given is written; raise what the sink raised."""
        if not self._closed:
            self._closed = True
            self._queue.put(_END)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind, *exc: object) -> None:
        if kind is None:
            self.close()
        elif not self._closed:
            self._dropping, self._closed = True, True
            self._queue.put(_END)
            self._thread.join()
