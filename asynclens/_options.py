"""Checking what ``session()`` is given, before anything starts.

- :func:`checked_options` wraps ``Session.__init__``: an unknown keyword becomes
  one line that lists the valid options and suggests the closest one
  (:class:`UnknownOptionError`, still a :class:`TypeError`), and the duration
  options are parsed by one rule (:func:`asynclens._durations.parse_seconds`: a
  bare number is seconds, ``"50ms"`` and ``timedelta`` work too).
- :func:`check_outputs` runs when a session starts: a file sink whose directory
  is missing or not writable is refused then, not when the report is written at
  the end and lost.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from ._durations import parse_seconds

__all__ = ["OptionError", "UnknownOptionError", "check_outputs", "checked_options", "output_problem"]

_F = TypeVar("_F", bound=Callable[..., Any])


class OptionError(ValueError):
    """A session option is wrong (a bad value, an output that cannot be written); the
    message is one line naming the option."""


class UnknownOptionError(OptionError, TypeError):
    """``session()`` got a keyword it does not have. A :class:`TypeError`, as Python's own
    error for an unexpected keyword would be."""


def unknown_option_message(where: str, name: str, valid: Iterable[str]) -> str:
    """``where: unknown option 'x' (did you mean 'y'?); valid options: a, b, ...``"""
    names = list(valid)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not close:  # a prefix or a part of a name (threshold -> stall_threshold) is close too
        close = [n for n in names if len(name) >= 3 and (name in n or n in name)][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown option {name!r}{hint}; valid options: {', '.join(names)}"


def checked_options(*, where: str, durations: Iterable[str] = ()) -> Callable[[_F], _F]:
    """Decorate an ``__init__`` whose options are keyword parameters: unknown keywords
    raise :class:`UnknownOptionError` (one line), and the keywords in ``durations``
    arrive as float seconds, parsed by :func:`~asynclens._durations.parse_seconds`."""
    duration_names = tuple(durations)

    def decorate(init: _F) -> _F:
        parameters = inspect.signature(init).parameters
        accepted = {
            name
            for name, p in parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        valid = [name for name in parameters if name in accepted and name != "self"]
        positional = [
            name
            for name, p in parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) and name != "self"
        ]
        missing = [name for name in duration_names if name not in accepted]
        if missing:  # a renamed option must not silently lose its parsing
            raise AssertionError(f"checked_options: {init.__qualname__} has no option {missing}")

        @functools.wraps(init)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            for name in kwargs:
                if name not in accepted or name == "self":
                    raise UnknownOptionError(unknown_option_message(where, name, valid))
            if len(args) > len(positional):
                raise UnknownOptionError(
                    f"{where}: takes {len(positional)} positional argument(s) ({', '.join(positional)}), "
                    f"{len(args)} were given: pass the others by name ({', '.join(valid)})"
                )
            for name in duration_names:
                if name in kwargs:
                    kwargs[name] = parse_seconds(kwargs[name], f"{where[:-1]}{name}=...)")
            return init(self, *args, **kwargs)

        return cast(_F, wrapper)

    return decorate


def output_problem(path: str) -> str | None:
    """Why a report cannot be written to ``path`` (one phrase), or None when it can."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a directory"
    if not os.path.exists(folder):
        return f"no such directory {folder!r}"
    if not os.path.isdir(folder):
        return f"{folder!r} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the directory {folder!r} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file is not writable"
    return None


def check_outputs(sinks: Iterable[Any], where: str = "asynclens.session()") -> None:
    """Raise :class:`OptionError` (one line) for the first file sink that cannot write its
    file. File sinks are asynclens's own sinks with a ``path`` (``.jsonl``, ``.html``,
    ``.txt``, ...); other sinks are the user's to check."""
    for sink in sinks:
        path = getattr(sink, "path", None)
        if not isinstance(path, str) or not type(sink).__module__.startswith("asynclens.sinks."):
            continue
        problem = output_problem(path)
        if problem is not None:
            raise OptionError(f"{where}: cannot write {path!r}: {problem}")
