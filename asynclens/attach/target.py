"""The attached session, inside the target process.

The bootstrap script (``bootstrap.py``) imports this module in the target and calls
:func:`start` with the socket it connected to the attacher. From then on the
session's records go over that socket as JSON lines (:class:`SocketSink`, on the
session's flusher thread), and one control thread waits for the attacher's
``detach`` line, or for the socket to close (the attacher died), and then detaches:
closes the session (every probe's patch removed, the flusher and watchdog ended),
tells the attacher what is left, and ends. Nothing here raises into the target.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..records import Record, SessionInfo
from ..report.fileformat import encode_record
from ..session import Session
from ..sinks.base import Sink

__all__ = ["CONTROL_KEY", "SocketSink", "start"]

#: The key of the control lines (handshake, detached) that travel beside the records.
CONTROL_KEY = "asynclens_attach"
#: How long one send may block before the sink gives up (the attacher stopped reading).
SEND_TIMEOUT_S = 10.0
#: How often the live view gets a snapshot (open handles, live tasks).
SNAPSHOT_EVERY_S = 1.0
_CONTROL_THREAD = "asynclens-attach-control"

_lock = threading.Lock()
_attached: _Attachment | None = None  # the one attachment of this process


def control_line(kind: str, **fields: Any) -> bytes:
    """A control line: ``{"asynclens_attach": kind, ...}`` and a newline."""
    return (json.dumps({CONTROL_KEY: kind, **fields}, default=str) + "\n").encode("utf-8")


class SocketSink(Sink):
    """Writes the header and every record as a JSON line to a connected socket."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection

    def open(self, info: SessionInfo) -> None:
        self._connection.send((encode_record(info) + "\n").encode("utf-8"))

    def write(self, records: Sequence[Record]) -> None:
        self._connection.send("".join([encode_record(r) + "\n" for r in records]).encode("utf-8"))

    def __repr__(self) -> str:
        return "SocketSink(attacher)"


class _Connection:
    """The socket to the attacher; sends from several threads are serialised."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self.broken = False

    def send(self, data: bytes) -> None:
        if self.broken:
            raise ConnectionError("the attacher is gone")
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.broken = True
                raise

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class _Attachment:
    def __init__(self, connection: _Connection, session: Session, live: bool = False) -> None:
        self.connection = connection
        self.session = session
        self.live = live
        self.thread = threading.Thread(target=self._control, name=_CONTROL_THREAD, daemon=True)

    def _control(self) -> None:
        global _attached
        reason = "detach"
        try:
            reason = self._wait_for_detach()
        finally:
            try:
                self.session.close()
            except Exception:  # close() guards its parts; this is the last resort
                pass
            leftover = self._leftover()
            try:
                self.connection.send(control_line("detached", reason=reason, **leftover))
            except OSError:
                pass
            self.connection.close()
            with _lock:
                _attached = None
            self.session = None  # type: ignore[assignment]

    def _wait_for_detach(self) -> str:
        sock = self.connection.sock
        pending = b""
        while True:
            if self.session.state != "active":
                return "the session ended in the target"
            try:
                ready, _, _ = select.select([sock], [], [], SNAPSHOT_EVERY_S)
                if not ready:
                    if self.live:
                        self._send_snapshot()
                    continue
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except (OSError, ValueError):
                return "the attacher's connection broke"
            if not chunk:
                return "the attacher closed the connection"
            pending += chunk
            if b"detach\n" in pending:
                return "detach"

    def _send_snapshot(self) -> None:
        from ..live.snapshot import live_snapshot

        try:
            snapshot = live_snapshot(self.session)
        except Exception as exc:
            self.session.internal_error("taking a live snapshot", exc)
            return
        self.connection.send(control_line("snapshot", snapshot=snapshot))

    def _leftover(self) -> dict[str, Any]:
        """What asynclens still runs in this process after the close (should be nothing)."""
        from .._state import context

        threads = [
            t.name for t in threading.enumerate() if t.name.startswith("asynclens") and t is not threading.current_thread()
        ]
        return {"threads": threads, "session_active": context.active is not None}


def start(sock: socket.socket, options: Mapping[str, Any]) -> None:
    """Start a session whose records go to ``sock`` and the control thread that ends it.

    ``options``: ``session`` (keyword arguments of :class:`~asynclens.session.Session`),
    ``name``, ``attached`` (what the header's options record about the attach).
    Raises when the session cannot start; the caller then leaves nothing behind.
    """
    global _attached
    with _lock:
        if _attached is not None:
            raise RuntimeError("asynclens is already attached to this process")
        from .._state import context

        if context.active is not None:
            raise RuntimeError("an asynclens session is already active in this process")
        sock.settimeout(SEND_TIMEOUT_S)
        connection = _Connection(sock)
        session = Session([SocketSink(connection)], name=options.get("name"), **dict(options.get("session", {})))
        session.options["attached"] = dict(options.get("attached", {}), at_wall_ns=time.time_ns())
        attachment = _Attachment(connection, session, live=bool(options.get("live")))
        connection.send(control_line("ok", python=sys.version.split()[0]))
        session.start()
        try:
            attachment.thread.start()
        except BaseException:
            session.close()
            raise
        _attached = attachment
        loops = session.statistics().loops_seen
        connection.send(control_line("started", loops=loops))
