"""A pod's log as it streams from its node (the pods/log subresource), read so that a caller
can wait with a timeout and stop at any moment."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import urllib3

from jobscheduler.domain.errors import UnavailableError
from jobscheduler.kube.translate import describe


class PodLogStream:
    """An open pods/log response, read by a thread of its own into a small queue, so that the
    reader can wait with a timeout and give up at any moment: a followed log ends only when the
    node closes it (kwok's fake nodes never do) or when close() is called."""

    CHUNK_BYTES = 64 * 1024

    def __init__(self, resp: Any, *, pod: str) -> None:
        self._resp = resp
        self._pod = pod
        # Bounded: a slow gRPC reader holds the node back through TCP, not through memory.
        self._queue: queue.Queue[bytes | Exception | None] = queue.Queue(maxsize=16)
        self._closed = threading.Event()
        self._finished = False
        # The end (None) or a break taken from the queue behind some bytes: given by the next read.
        self._held: list[Exception | None] = []
        self._thread = threading.Thread(target=self._pump, name=f"pod-log-{pod}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> bytes | None:
        """The bytes of the log that have come (up to about 1 MiB: a node may send each line on
        its own), waiting up to `timeout` seconds for the first; b"" when none came; None once
        the log has ended. Raises UnavailableError when the connection broke."""
        data = b""
        while len(data) < 16 * self.CHUNK_BYTES:
            item: bytes | Exception | None
            if self._held:
                item = self._held.pop()
            else:
                try:
                    item = self._queue.get(timeout=timeout) if not data else self._queue.get_nowait()
                except queue.Empty:
                    return data
            if item is None or isinstance(item, Exception):
                if data:
                    self._held.append(item)
                    return data
                if item is None:
                    self._finished = True
                    return None
                raise item
            data += item
        return data

    def close(self) -> None:
        """Stops reading and frees the connection (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if not self._finished:
            # Unblocks the pump's read: the stream may be followed and silent.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                self._resp.shutdown()
        self._thread.join(timeout=5)
        if not self._finished:
            self._resp.close()  # partly read: the connection cannot be reused
        self._resp.release_conn()

    def _pump(self) -> None:
        try:
            for chunk in self._resp.stream(self.CHUNK_BYTES, decode_content=True):
                if chunk and not self._offer(chunk):
                    return
            self._offer(None)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if not self._closed.is_set():
                self._offer(UnavailableError(f"the log stream of pod {self._pod} broke ({describe(e)})"))

    def _offer(self, item: bytes | Exception | None) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False
