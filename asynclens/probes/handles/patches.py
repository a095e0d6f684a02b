"""The patches through which the handle registry sees handles being opened.

All are :class:`~asynclens._patch.Patch` objects, installed when the probe
starts and removed when it stops. What each covers:

* ``socket.socket.__init__``: every Python socket object (``socket()``,
  ``accept``, ``socketpair``, ``fromfd``, ``create_connection``), except the
  two self-pipe sockets every selector event loop makes for itself: they are
  the loop's own and close with it (tracking them cost every new loop two
  creation sites). A loop that is never closed is still reported by Python's
  own ``ResourceWarning: unclosed event loop``, which asynclens passes through.
* ``builtins.open`` and ``io.open``: files (``os.fdopen``, ``pathlib``,
  ``tempfile`` go through ``io.open``).
* ``subprocess.Popen.__init__``: child processes (also asyncio's subprocess API
  on the stdlib loops, which uses ``Popen``).
* ``threading.Thread.start``: non-daemon threads.
* stdlib selector loops: ``_make_socket_transport``, ``_make_ssl_transport``,
  ``_make_datagram_transport``, ``_make_read_pipe_transport``,
  ``_make_write_pipe_transport``: every transport (client, server, pipes),
  with byte counters on socket transports (see ``handles.py``).
* uvloop (imported before the session or while it runs: the patches go on
  ``uvloop.Loop`` as soon as the session hears of the class): ``create_connection``,
  ``create_unix_connection``, ``connect_accepted_socket``,
  ``create_datagram_endpoint``, ``connect_read_pipe``, ``connect_write_pipe``
  (the returned transport), ``create_server``/``create_unix_server`` (the
  server, and each accepted connection's transport through its protocol),
  ``subprocess_exec``/``subprocess_shell`` (the process transport). uvloop
  creates its sockets in C: bytes are counted on its TCP connections only (from
  the kernel's counters).
* ``asyncio.runners._cancel_all_tasks`` (and uvloop's own copy, patched with its ``Loop``, used by
  ``uvloop.run`` before Python 3.11): tasks still pending when ``asyncio.run()``
  (or a ``Runner``) finishes are reported before it cancels them.
* ``warnings._showwarnmsg`` (plus an ``always`` filter for ``ResourceWarning``):
  a finaliser's ``ResourceWarning`` names the leaking object, so the registry can
  mark it "closed by GC". Whether the warning is then shown follows the filters
  as they were without asynclens.
"""

from __future__ import annotations

import builtins
import io
import re
import socket
import subprocess
import sys
import threading
import warnings
import weakref
from asyncio import selector_events
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._attrs import remove_instance_attr
from .._loops import LOOP_MODULES
from .._patch import Patch, caller_of_patched
from .._tasks import pending_tasks
from . import sites as _sites
from .registry import FILE, SOCKET, SUBPROCESS, THREAD

if TYPE_CHECKING:
    from .probe import HandleProbe

__all__ = ["covers_transports", "install", "loop_class_hook", "loop_class_patches", "uninstall"]

_probe: HandleProbe | None = None
_capture = _sites.capture


# ------------------------------------------------------------ plain handles


def _socket_init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    probe = _probe
    if probe is not None:
        try:
            caller = caller_of_patched()
            if caller is not None and caller.f_code is _SOCKETPAIR_CODE:
                maker = caller.f_back
                if maker is not None and maker.f_code is _SELF_PIPE_CODE:
                    return  # an event loop's self-pipe: asyncio's own, closed with the loop
            if caller is not None and caller.f_code is _ACCEPT_CODE:  # an accepted connection: opened where its listener was
                listener = probe.registry.entry_of(caller.f_locals.get("self"))
                if listener is not None:
                    probe.registry.add(instance, SOCKET, None, listener.frames, listener)
                    return
            frames = _capture(2)
            if frames is not None:
                probe.registry.add(instance, SOCKET, None, frames)
        except Exception as exc:
            probe.session_error("tracking a socket", exc)


_ACCEPT_CODE = socket.socket.accept.__code__
_SOCKETPAIR_CODE = getattr(socket.socketpair, "__code__", None)
_SELF_PIPE_CODE = getattr(getattr(selector_events.BaseSelectorEventLoop, "_make_self_pipe", None), "__code__", None)


def _open(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    obj = wrapped(*args, **kwargs)
    probe = _probe
    if probe is not None:
        try:
            frames = _capture(2)
            if frames is not None:
                file = args[0] if args else kwargs.get("file")
                mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
                probe.registry.add(obj, FILE, (file, mode), frames)
        except Exception as exc:
            probe.session_error("tracking a file", exc)
    return obj


def _popen_init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    probe = _probe
    if probe is not None:
        try:
            frames = _capture(2)
            if frames is not None:
                probe.registry.add(instance, SUBPROCESS, (instance.pid, instance.args), frames)
        except Exception as exc:
            probe.session_error("tracking a subprocess", exc)


def _thread_start(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    probe = _probe
    if probe is not None:
        try:
            if not instance.daemon and not instance.name.startswith("asynclens"):
                frames = _capture(2)
                if frames is not None:
                    probe.registry.add(instance, THREAD, f"thread {instance.name!r}", frames)
        except Exception as exc:
            probe.session_error("tracking a thread", exc)
    return wrapped(*args, **kwargs)


# ------------------------------------------------------ stdlib loop transports


def _transport_made(transport: Any, args: tuple[Any, ...], count_io: bool) -> None:
    probe = _probe
    if probe is None:
        return
    try:
        # A transport over a tracked socket was opened where (and in the span) its socket was.
        parent = probe.registry.entry_of(args[0]) if args else None
        frames = parent.frames if parent is not None else _capture(3)
        if frames is not None:
            probe.track_transport(transport, frames, count_io=count_io and probe.count_io, parent=parent)
    except Exception as exc:
        probe.session_error("tracking a transport", exc)


def _make_transport(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    transport = wrapped(*args, **kwargs)
    _transport_made(transport, args, False)
    return transport


def _make_socket_transport(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    transport = wrapped(*args, **kwargs)
    _transport_made(transport, args, True)
    return transport


# ------------------------------------------------------------------- uvloop


def _safe_capture() -> list[Any] | None:
    try:
        return _capture(3)
    except Exception:
        return None


async def _then_track(coro: Any, track: Callable[[Any, Any], None], what: str) -> Any:
    """Await ``coro`` (a uvloop call that opens something in C), then ``track(probe, result)``."""
    result = await coro
    probe = _probe
    if probe is not None:
        try:
            track(probe, result)
        except Exception as exc:
            probe.session_error(what, exc)
    return result


def _uv_returns_pair(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    frames = _safe_capture() if _probe is not None else None
    if frames is None:
        return wrapped(*args, **kwargs)

    def track(probe: Any, pair: Any) -> None:
        probe.track_transport(pair[0], frames, count_io=probe.count_io)

    return _then_track(wrapped(*args, **kwargs), track, "tracking a uvloop transport")


def _uv_subprocess(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    frames = _safe_capture() if _probe is not None else None
    if frames is None:
        return wrapped(*args, **kwargs)

    def track(probe: Any, pair: Any) -> None:
        transport, protocol = pair
        try:
            weakref.ref(transport)
        except TypeError:  # uvloop's process transport: follow the protocol and the pid
            probe.registry.add(protocol, SUBPROCESS, ("pid", transport.get_pid()), frames)
        else:
            probe.registry.add(transport, SUBPROCESS, None, frames)

    return _then_track(wrapped(*args, **kwargs), track, "tracking a uvloop subprocess")


def _uv_server(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    frames = _safe_capture() if _probe is not None else None
    if frames is None or not args:
        return wrapped(*args, **kwargs)
    factory = args[0]

    def tracked_factory() -> Any:
        protocol = factory()
        if _probe is not None:
            try:
                _hook_connection_made(protocol, frames)
            except Exception as exc:
                _probe.session_error("hooking a uvloop protocol", exc)
        return protocol

    def track(probe: Any, server: Any) -> None:
        probe.registry.add(server, SOCKET, "server", frames)

    return _then_track(wrapped(tracked_factory, *args[1:], **kwargs), track, "tracking a uvloop server")


def _hook_connection_made(protocol: Any, frames: list[Any]) -> None:
    try:
        original = protocol.connection_made
    except AttributeError:
        return
    pref = weakref.ref(protocol)

    def connection_made(transport: Any) -> Any:
        protocol = pref()
        if protocol is not None:  # one call only: leave the protocol as it was
            remove_instance_attr(protocol, "connection_made", connection_made)
        probe = _probe
        if probe is not None:
            try:
                probe.track_transport(transport, frames, count_io=probe.count_io)
            except Exception as exc:
                probe.session_error("tracking a uvloop transport", exc)
        return original(transport)

    try:
        protocol.connection_made = connection_made
    except (AttributeError, TypeError):
        pass  # a protocol with __slots__: its connections are not seen


_UV_PAIR_METHODS = (
    "create_connection",
    "create_unix_connection",
    "connect_accepted_socket",
    "create_datagram_endpoint",
    "connect_read_pipe",
    "connect_write_pipe",
)
_UV_SUBPROCESS_METHODS = ("subprocess_exec", "subprocess_shell")
_UV_SERVER_METHODS = ("create_server", "create_unix_server")


# ------------------------------------------------------ tasks left by asyncio.run


def _cancel_all_tasks(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    probe = _probe
    if probe is not None and args:
        try:
            # the usual case (a test or program that awaited all it started): nothing pending
            if pending_tasks(args[0]):
                probe.note_abandoned_tasks(args[0])
        except Exception as exc:
            probe.session_error("listing tasks left pending", exc)
    return wrapped(*args, **kwargs)


# ------------------------------------------------------------ ResourceWarning

_ALWAYS = ("always", None, ResourceWarning, None, 0)


class _WarningGate:
    """Decides, with the filters minus asynclens's own, whether a warning would have shown."""

    def __init__(self) -> None:
        self.seen: set[Any] = set()

    def action(self, msg: Any) -> str:
        text = str(msg.message)
        for item in warnings.filters:
            if item is _ALWAYS:
                continue
            action, message, category, module, lineno = item
            if (
                (message is None or message.match(text))
                and issubclass(msg.category, category)
                and (module is None or module.match(_module_name(msg.filename)))
                and (lineno == 0 or lineno == msg.lineno)
            ):
                return str(action)
        return str(getattr(warnings, "defaultaction", "default"))

    def shown(self, msg: Any) -> bool:
        action = self.action(msg)
        if action == "ignore":
            return False
        if action == "error":
            raise msg.message
        key: Any = None
        if action == "once":
            key = (str(msg.message), msg.category)
        elif action == "module":
            key = (str(msg.message), msg.category, msg.filename)
        elif action == "default":
            key = (str(msg.message), msg.category, msg.filename, msg.lineno)
        if key is not None:
            if key in self.seen:
                return False
            if len(self.seen) >= 10_000:  # bounded: forget, and show a repeat again
                self.seen.clear()
            self.seen.add(key)
        return True


def _module_name(filename: str) -> str:
    name = re.sub(r"\.py$", "", filename or "")
    return name.replace("/", ".").rsplit(".", 1)[-1] if name else "<unknown>"


_gate = _WarningGate()


def _showwarnmsg(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    msg = args[0] if args else None
    if msg is None or not issubclass(getattr(msg, "category", object), ResourceWarning):
        return wrapped(*args, **kwargs)
    probe = _probe
    source = getattr(msg, "source", None)
    if probe is not None and source is not None:
        try:
            probe.registry.resource_warning(source)
        except Exception as exc:
            probe.session_error("matching a ResourceWarning", exc)
    if _gate.shown(msg):
        return wrapped(*args, **kwargs)
    return None


def _filters_changed() -> None:
    mutated = getattr(warnings, "_filters_mutated", None) or getattr(warnings, "_filters_mutated_lock_held", None)
    if mutated is not None:
        mutated()


# ------------------------------------------------------------------ install


def _patches() -> list[Patch]:
    from asyncio import runners, selector_events

    patches = [
        Patch(socket.socket, "__init__", _socket_init),
        Patch(builtins, "open", _open),
        Patch(io, "open", _open),
        Patch(subprocess.Popen, "__init__", _popen_init),
        Patch(threading.Thread, "start", _thread_start),
        Patch(selector_events.BaseSelectorEventLoop, "_make_socket_transport", _make_socket_transport),
        Patch(selector_events.BaseSelectorEventLoop, "_make_ssl_transport", _make_transport),
        Patch(selector_events.BaseSelectorEventLoop, "_make_datagram_transport", _make_transport),
    ]
    if sys.platform != "win32":
        from asyncio import unix_events

        loop_cls = unix_events._UnixSelectorEventLoop
        patches.append(Patch(loop_cls, "_make_read_pipe_transport", _make_transport))
        patches.append(Patch(loop_cls, "_make_write_pipe_transport", _make_transport))
    if hasattr(runners, "_cancel_all_tasks"):
        patches.append(Patch(runners, "_cancel_all_tasks", _cancel_all_tasks))
    if hasattr(warnings, "_showwarnmsg"):
        patches.append(Patch(warnings, "_showwarnmsg", _showwarnmsg))
    return patches


def _uv_module(cls: type) -> Any:
    """uvloop (or its fork) if ``cls`` is its ``Loop`` class, else None."""
    root = getattr(cls, "__module__", "").partition(".")[0]
    module = sys.modules.get(root) if root in LOOP_MODULES else None
    return module if module is not None and getattr(module, "Loop", None) is cls else None


def loop_class_patches(cls: type) -> list[Patch]:
    """The (not yet installed) patches of a loop class: uvloop's ``Loop`` opens its
    transports in C, so its methods that return them are patched, and ``uvloop.run``'s
    copy of ``_cancel_all_tasks`` (Python < 3.11); none for other classes."""
    uvloop = _uv_module(cls)
    if uvloop is None:
        return []
    patches = []
    if callable(getattr(uvloop, "_cancel_all_tasks", None)):  # uvloop.run on Python < 3.11
        patches.append(Patch(uvloop, "_cancel_all_tasks", _cancel_all_tasks))
    for names, wrapper in (
        (_UV_PAIR_METHODS, _uv_returns_pair),
        (_UV_SERVER_METHODS, _uv_server),
        (_UV_SUBPROCESS_METHODS, _uv_subprocess),
    ):
        for name in names:
            if hasattr(cls, name):
                patches.append(Patch(cls, name, wrapper))
    return patches


def loop_class_hook(installed: list[Patch]) -> Callable[[type], None]:
    """A ``Session.on_loop_class`` callback: installs :func:`loop_class_patches` of each
    class while the probe is active, appending them to ``installed`` (which
    :func:`uninstall` then removes)."""

    def hook(cls: type) -> None:
        if _probe is None:
            return
        for patch in loop_class_patches(cls):
            patch.install()
            installed.append(patch)

    return hook


def covers_transports(loop: Any) -> bool:
    """True if the transports of ``loop`` are tracked (stdlib selector loops, uvloop)."""
    if isinstance(loop, selector_events.BaseSelectorEventLoop):
        return True
    return any(_uv_module(cls) is not None for cls in type(loop).__mro__)


def install(probe: HandleProbe) -> list[Patch]:
    """Install every patch for ``probe`` (the only probe patching at a time)."""
    global _probe
    patches = _patches()
    installed = []
    try:
        for patch in patches:
            patch.install()
            installed.append(patch)
        if any(p.attr == "_showwarnmsg" for p in installed):
            filters: list[Any] = warnings.filters  # type: ignore[assignment]
            filters.insert(0, _ALWAYS)
            _filters_changed()
    except BaseException:
        for patch in installed:
            patch.remove()
        raise
    _gate.seen.clear()
    _probe = probe
    return installed


def uninstall(patches: list[Patch]) -> None:
    """Remove what :func:`install` added (and nothing else)."""
    global _probe
    _probe = None
    for patch in reversed(patches):
        patch.remove()
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    for i in range(len(filters) - 1, -1, -1):
        if filters[i] is _ALWAYS:
            del filters[i]
    _filters_changed()
