"""The attaching side: checks, the private data path, ``sys.remote_exec``, the record stream.

The data path is a Unix-domain socket in a directory only the attaching user (or,
when root attaches to another user's process, only that user) can enter: the
directory is made by :func:`tempfile.mkdtemp` (mode 0700), the script
``sys.remote_exec`` runs is written into it with mode 0600, and the connection's
peer is checked to be the target (``SO_PEERCRED``). There is no TCP port and no
file readable by other users; the directory is removed when the attach ends.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from .bootstrap import bootstrap_script
from .checks import AttachError, TargetInfo, check_attacher, inspect_target

__all__ = ["AttachError", "Attachment", "attach", "import_paths"]

CONTROL_PREFIX = b'{"asynclens_attach"'
#: How long the target may take to reach a safe point and run the script.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: How long detaching may take (the last flush of the target's records).
DETACH_TIMEOUT_S = 30.0


def import_paths() -> tuple[list[str], list[str]]:
    """The folders the target needs on ``sys.path`` to import this asynclens: this
    package's parent (put first, so that the target runs the same asynclens as the
    attacher) and wrapt's (put last, so that a wrapt of the target's own wins)."""
    import wrapt

    import asynclens

    first = [os.path.dirname(os.path.dirname(os.path.abspath(asynclens.__file__)))]
    wrapt_home = os.path.dirname(os.path.dirname(os.path.abspath(wrapt.__file__)))
    return first, ([wrapt_home] if wrapt_home not in first else [])


@dataclass
class Attachment:
    """One attach, from the handshake to the detach; ``trace_path`` holds the records."""

    target: TargetInfo
    folder: str
    trace_path: str
    attached_wall_ns: int = 0
    detached: bool = False
    #: Why the target's session ended ("detach", or another reason it gave).
    reason: str | None = None
    #: What the target said was left after its close (threads, an active session).
    leftover: Mapping[str, Any] = field(default_factory=dict)
    exited: bool = False
    records: int = 0
    loops: int = 0
    _sock: socket.socket | None = None
    _trace: IO[bytes] | None = None
    #: Called with every record line as it arrives (the live view).
    on_line: Callable[[bytes], None] | None = None
    #: Called with each snapshot the target sends (asked for with the ``live`` option).
    on_snapshot: Callable[[Mapping[str, Any]], None] | None = None
    _pending: bytes = b""

    # ------------------------------------------------------------ stream

    def pump(self, timeout: float, on_line: Callable[[bytes], None] | None = None) -> bool:
        """Read what the target sent within ``timeout`` seconds; False once the stream ended."""
        sock = self._sock
        if sock is None:
            return False
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            chunk = sock.recv(1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            self._end_of_stream()
            return False
        self._consume(chunk, on_line)
        return True

    def _consume(self, chunk: bytes, on_line: Callable[[bytes], None] | None = None) -> None:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        on_line = on_line or self.on_line
        for line in lines:
            if not line:
                continue
            if line.startswith(CONTROL_PREFIX):
                try:
                    self._control(json.loads(line))
                except ValueError:
                    pass
                continue
            if self._trace is not None:
                self._trace.write(line + b"\n")
            self.records += 1
            if on_line is not None:
                on_line(line)
        if self._trace is not None:
            self._trace.flush()

    def _control(self, message: Mapping[str, Any]) -> None:
        kind = message.get("asynclens_attach")
        if kind == "started":
            self.loops = int(message.get("loops") or 0)
        elif kind == "snapshot" and self.on_snapshot is not None:
            snapshot = message.get("snapshot")
            if isinstance(snapshot, dict):
                self.on_snapshot(snapshot)
        elif kind == "detached":
            self.detached = True
            self.reason = str(message.get("reason"))
            self.leftover = {k: v for k, v in message.items() if k not in ("asynclens_attach", "reason")}

    def _end_of_stream(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if not self.detached:
            # the socket closes while the process tears down, a moment before it is gone
            deadline = time.monotonic() + 2.0
            while _alive(self.target.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.exited = not _alive(self.target.pid)

    def detach(self, on_line: Callable[[bytes], None] | None = None, timeout: float = DETACH_TIMEOUT_S) -> None:
        """Ask the target to detach and read its last records until it has."""
        if self._sock is None:
            return
        try:
            self._sock.sendall(b"detach\n")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while self.pump(min(0.2, max(0.0, deadline - time.monotonic())), on_line):
            if time.monotonic() >= deadline:
                # closing the socket makes the target's control thread detach anyway
                self._end_of_stream()
                break

    def record(
        self,
        duration: float | None,
        on_line: Callable[[bytes], None] | None = None,
        stop: threading.Event | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """Read records for ``duration`` seconds (None: until ``stop`` is set or Ctrl-C),
        then detach. ``on_tick`` runs about every 0.2 s."""
        end = None if duration is None else time.monotonic() + duration
        try:
            while end is None or time.monotonic() < end:
                if stop is not None and stop.is_set():
                    break
                wait = 0.2 if end is None else min(0.2, max(0.0, end - time.monotonic()))
                if not self.pump(wait, on_line):
                    return
                if on_tick is not None:
                    on_tick()
        except KeyboardInterrupt:
            pass
        try:
            self.detach(on_line)
        except KeyboardInterrupt:  # a second Ctrl-C: the target detaches on its own when the socket closes
            self._end_of_stream()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return int(struct.unpack("3i", creds)[0])


def _remote_exec(pid: int, script: str) -> None:
    try:
        sys.remote_exec(pid, script)  # type: ignore[attr-defined]
    except PermissionError as exc:
        raise AttachError(
            f"not permitted to attach to PID {pid} ({exc}): attach as root, or allow ptrace "
            "(kernel.yama.ptrace_scope=0, or CAP_SYS_PTRACE)"
        ) from None
    except ProcessLookupError:
        raise AttachError(f"no process with PID {pid}") from None
    except (RuntimeError, OSError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not _alive(pid):
            raise AttachError(f"PID {pid} ended before asynclens could attach") from None
        if "PyRuntime" in text or "debug offsets" in text.lower():
            raise AttachError(f"PID {pid} is not a Python this version can attach to ({text})") from None
        raise AttachError(f"sys.remote_exec failed on PID {pid}: {text}") from None


@contextmanager
def attach(
    pid: int,
    options: Mapping[str, Any],
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    paths: tuple[list[str], list[str]] | None = None,
    on_line: Callable[[bytes], None] | None = None,
) -> Iterator[Attachment]:
    """Start an attached session in ``pid`` and yield the :class:`Attachment`; at the end
    detach (if not done) and remove the private folder and everything in it.

    ``options`` go to :func:`asynclens.attach.target.start`. ``paths``: the import
    path the target gets (default :func:`import_paths`). Raises :class:`AttachError`
    with one line for every way attaching can fail; the target is then left as it was.
    """
    check_attacher()
    info = inspect_target(pid)
    first, last = paths if paths is not None else import_paths()
    folder = tempfile.mkdtemp(prefix="asynclens-attach-")  # mode 0700
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    attachment = Attachment(target=info, folder=folder, trace_path=os.path.join(folder, "trace.jsonl"), on_line=on_line)
    try:
        socket_path = os.path.join(folder, "s")
        listener.bind(socket_path)
        listener.listen(1)
        script_path = os.path.join(folder, "attach.py")
        text = bootstrap_script(
            socket_path, options, attacher_pid=os.getpid(), first_paths=first, last_paths=last
        )
        fd = os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if os.geteuid() == 0 and info.uid != 0:
            # root attaching to another user's process: that user must reach the folder (and only they)
            for path in (folder, script_path, socket_path):
                os.chown(path, info.uid, -1)
        attachment.attached_wall_ns = time.time_ns()
        _remote_exec(pid, script_path)
        sock = _accept(listener, info, connect_timeout)
        attachment._sock = sock
        attachment._trace = open(attachment.trace_path, "wb")
        _handshake(attachment, sock, connect_timeout)
        yield attachment
        attachment.detach()
    finally:
        listener.close()
        if attachment._sock is not None:  # an error, or the caller's exception: let the target detach itself
            attachment._end_of_stream()
        shutil.rmtree(folder, ignore_errors=True)


def _accept(listener: socket.socket, info: TargetInfo, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AttachError(
                f"PID {info.pid} did not run the attach script within {timeout:g} s: its main thread runs no "
                "Python code (blocked in a call, or an idle loop with nothing to do?); nothing was installed"
            )
        ready, _, _ = select.select([listener], [], [], min(0.2, left))
        if not _alive(info.pid):
            raise AttachError(f"PID {info.pid} exited before asynclens could attach")
        if not ready:
            continue
        sock, _ = listener.accept()
        peer = _peer_pid(sock)
        if peer is not None and peer != info.pid:
            sock.close()  # not the target: only it may speak on this socket
            continue
        return sock


def _handshake(attachment: Attachment, sock: socket.socket, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([sock], [], [], max(0.0, min(0.2, left)))
        if ready:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        elif left <= 0:
            raise AttachError(f"PID {attachment.target.pid} connected but did not answer within {timeout:g} s")
    line, _, rest = data.partition(b"\n")
    try:
        message = json.loads(line) if line else {}
    except ValueError:
        message = {}
    kind = message.get("asynclens_attach") if isinstance(message, dict) else None
    if kind != "ok":
        text = message.get("message") if isinstance(message, dict) else None
        if not line and not _alive(attachment.target.pid):
            raise AttachError(f"PID {attachment.target.pid} exited while asynclens attached")
        raise AttachError(str(text or f"PID {attachment.target.pid} gave no answer to the attach"))
    attachment._consume(rest)
