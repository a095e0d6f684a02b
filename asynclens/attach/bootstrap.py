"""The script ``sys.remote_exec`` runs in the target, written as text.

It runs in the target's main thread at a safe point, in a namespace of its own.
It first connects to the attacher's socket (and does nothing at all when that
fails: an attacher that gave up leaves a script that may still run later, and it
must then be harmless), then imports asynclens with the attacher's import path
added to ``sys.path`` only for that import, and starts :mod:`asynclens.attach.target`.
On any failure it removes what it imported, says why over the socket, and leaves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["bootstrap_script"]

_TEMPLATE = '''\
# asynclens attach: written by the attaching process (PID {attacher_pid}), run once by sys.remote_exec.
def _asynclens_attach(socket_path, first_paths, last_paths, options):
    import json
    import socket
    import sys

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        sock.connect(socket_path)
    except OSError:
        return  # the attacher is gone: leave the process as it is

    def say(kind, message):
        try:
            sock.sendall((json.dumps({{"asynclens_attach": kind, "message": message}}) + "\\n").encode("utf-8"))
        except OSError:
            pass

    before = set(sys.modules)
    cached = set(sys.path_importer_cache)
    first = [p for p in first_paths if p not in sys.path]
    last = [p for p in last_paths if p not in sys.path]
    sys.path[0:0] = first
    sys.path.extend(last)
    try:
        from asynclens.attach import target
    except BaseException as exc:
        for name in [m for m in sys.modules if m not in before]:
            if name.partition(".")[0] in ("asynclens", "wrapt"):
                del sys.modules[name]
        tried = ", ".join(first_paths + last_paths) or "the target's own sys.path"
        say("import_error", "asynclens is not importable in the target (tried " + tried + "): "
            + type(exc).__name__ + ": " + str(exc))
        sock.close()
        return
    finally:
        for p in first + last:
            try:
                sys.path.remove(p)
            except ValueError:
                pass
            if p not in cached:
                sys.path_importer_cache.pop(p, None)
    try:
        target.start(sock, options)
    except BaseException as exc:
        say("error", "the session did not start in the target: " + type(exc).__name__ + ": " + str(exc))
        sock.close()


try:
    _asynclens_attach({socket_path!r}, {first_paths!r}, {last_paths!r}, __import__("json").loads({options!r}))
finally:
    del _asynclens_attach
'''


def bootstrap_script(
    socket_path: str,
    options: Mapping[str, Any],
    *,
    attacher_pid: int,
    first_paths: Sequence[str] = (),
    last_paths: Sequence[str] = (),
) -> str:
    """The script's text: connect to ``socket_path``, import asynclens with ``first_paths``
    put before and ``last_paths`` after the target's ``sys.path`` for that import only,
    and start the attached session with ``options`` (JSON-serialisable)."""
    return _TEMPLATE.format(
        attacher_pid=attacher_pid,
        socket_path=socket_path,
        first_paths=list(first_paths),
        last_paths=list(last_paths),
        options=json.dumps(dict(options)),
    )
