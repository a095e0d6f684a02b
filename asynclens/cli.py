"""``python -m asynclens``: run a program under a session, or convert recorded runs.

::

    python -m asynclens run [-o FILE ...] [--format FMT] script.py [args ...]
    python -m asynclens run [-o FILE ...] -m package.module [args ...]
    python -m asynclens report RUN.jsonl [RUN2.jsonl ...] [--format FMT] [-o FILE ...]
    python -m asynclens attach PID [--duration SECONDS] [-o FILE ...]   (Python 3.14+)
    python -m asynclens top PID                                          (Python 3.14+)
    python -m asynclens demo [-o report.html]
    python -m asynclens --version

``run`` gives the program its own ``sys.argv`` (``[script, *args]``), runs it
as ``__main__``, and exits with the program's exit status: ``sys.exit(n)``
keeps ``n``, an uncaught exception prints its traceback (asynclens's own frames
left out) and exits 1, Ctrl-C and SIGTERM end the process by that signal once
the outputs are written. The text summary goes to **stderr**, so the program's
stdout stays what it was. Status and errors of asynclens itself are one line on
stderr each; bad input exits 2 without a traceback.

Durations (``--stall-threshold``) take a unit (``50ms``, ``0.05s``, ``500us``); a
bare number is seconds, as in ``session()``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__

__all__ = ["FORMATS", "main"]

#: Output formats and the file suffix each one gets by default.
FORMATS = {
    "text": ".txt",
    "html": ".html",
    "chrome": ".trace.json",
    "speedscope": ".speedscope.json",
    "folded": ".folded",
    "jsonl": ".jsonl",
}
_SUFFIX_FORMATS = [  # longest first
    (".speedscope.json", "speedscope"),
    (".trace.json", "chrome"),
    (".jsonl", "jsonl"),
    (".json", "chrome"),
    (".html", "html"),
    (".htm", "html"),
    (".folded", "folded"),
    (".txt", "text"),
]
_FULL_STACKS_HELP = (
    "keep the standard library's and packages' frames in the stall stacks of the speedscope and folded"
    " outputs (the HTML report and the Chrome trace carry both)"
)
#: The width of a text report written to a file.
_FILE_WIDTH = 100
_HERE = os.path.dirname(os.path.abspath(__file__))
_RUNPY = os.path.abspath(runpy.__file__).rsplit(".", 1)[0]


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _format_of(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    lowered = path.lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if lowered.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in _SUFFIX_FORMATS)
    raise UsageError(f"cannot tell the format of {path!r} from its name: use one of {known}, or --format")


def _status(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"asynclens: {message}", file=sys.stderr, flush=True)


def _use_color(args: argparse.Namespace, stream: Any) -> bool:
    mode = getattr(args, "color", "auto")
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _size(path: str) -> str:
    try:
        n = os.path.getsize(path)
    except OSError:
        return "?"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


# ----------------------------------------------------------------- rendering


def render(
    data: Any, fmt: str, *, weight: str = "wall", color: bool = False, full_stacks: bool = False, width: int | None = None
) -> str:
    """Render a :class:`~asynclens.report.rundata.RunData` in ``fmt`` (one of :data:`FORMATS` but jsonl).

    ``full_stacks``: stall stacks in the speedscope and folded outputs keep the libraries'
    frames; ``width``: of the text report (default: the terminal's, else 100 columns)."""
    if fmt == "text":
        from .report.summary import summary_from_run

        return summary_from_run(data, color=color, width=width) + "\n"
    if fmt == "html":
        from .sinks.html import render_html

        return render_html(data)
    if fmt == "chrome":
        from .sinks.chrome import _encode, render_chrome

        return "".join(_encode(render_chrome(data)))
    if fmt == "speedscope":
        import json

        from .sinks.speedscope import render_speedscope

        return json.dumps(render_speedscope(data, full_stacks=full_stacks), ensure_ascii=False, separators=(",", ":"))
    if fmt == "folded":
        from .sinks.folded import render_folded

        return render_folded(data, weight, full_stacks=full_stacks)
    raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(f for f in FORMATS if f != 'jsonl')}")


# ----------------------------------------------------------------------- run


class _Signalled(BaseException):
    """SIGTERM arrived while the program ran (raised from our handler)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Signalled(signum)


def _internal(filename: str) -> bool:
    if filename.startswith("<frozen runpy"):
        return True
    name = os.path.abspath(filename)
    return name.startswith(_HERE + os.sep) or name.rsplit(".", 1)[0] == _RUNPY


def _print_user_traceback(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and _internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)
    sys.stderr.flush()


def _sink_for(path: str, fmt: str, weight: str, full_stacks: bool = False) -> Any:
    if fmt == "jsonl":
        from .sinks import JsonLinesSink

        return JsonLinesSink(path)
    if fmt == "html":
        from .sinks.html import HtmlSink

        return HtmlSink(path)
    if fmt == "chrome":
        from .sinks.chrome import ChromeTraceSink

        return ChromeTraceSink(path)
    if fmt == "speedscope":
        from .sinks.speedscope import SpeedscopeSink

        return SpeedscopeSink(path, full_stacks=full_stacks)
    if fmt == "folded":
        from .sinks.folded import FoldedSink

        return FoldedSink(path, weight=weight, full_stacks=full_stacks)
    from .sinks.text import TextSink

    return TextSink(path)


def _dump_factory(template: str, fmt: str, weight: str, full_stacks: bool) -> Any:
    """A flight recorder's output: a fresh sink for each dump, ``{n}`` in the name its number."""
    from .flight import dump_path

    def make(n: int) -> Any:
        return _sink_for(dump_path(template, n), fmt, weight, full_stacks)

    return make


def _count(text: str) -> int:
    """An argparse type: a positive whole number."""
    return _positive_int(text, f"{text!r} is not a whole number", f"{text!r} must be at least 1")


def _positive_int(text: str, not_int: str, not_positive: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_int) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(not_positive)
    return value


def _duration(text: str) -> float:
    """An argparse type: a duration option's value in seconds (a bare number is seconds)."""
    from ._durations import DurationError, parse_seconds

    try:
        return parse_seconds(text, "duration")
    except DurationError as exc:
        # argparse prefixes the option's name: keep only the reason
        raise argparse.ArgumentTypeError(str(exc).removeprefix("duration: ")) from None


def _check_outputs(outputs: Sequence[str]) -> None:
    from ._options import output_problem

    for path in outputs:
        problem = output_problem(path)
        if problem is not None:
            raise UsageError(f"cannot write {path!r}: {problem}")


def _session_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.no_lag:
        options["lag"] = False
    if args.no_handles:
        options["track_handles"] = False
    if args.no_scheduler:
        options["scheduler"] = False
    if args.stall_threshold is not None:
        options["stall_threshold"] = args.stall_threshold
    return options


def _run(args: argparse.Namespace) -> int:
    from .session import Session

    if args.module is None and not args.target:
        raise UsageError("run: give a script (run app.py) or a module (run -m package.module)")
    outputs = list(args.output or [])
    if args.format and not outputs:
        outputs = [f"asynclens-report{FORMATS[args.format]}"]
    _check_outputs(outputs)
    sinks = [_sink_for(path, _format_of(path, args.format), args.weight, args.full_stacks) for path in outputs]
    live = None
    if args.live:
        from .live.sink import LiveSink

        live = LiveSink()
        sinks.append(live)
    if args.module is not None:
        argv = [args.module, *args.target]
        target = args.module
        if not _module_exists(args.module):
            print(f"asynclens: error: run: no module named {args.module!r}: the program did not start", file=sys.stderr)
            return 1
    else:
        script = args.target[0]
        if not os.path.exists(script):
            raise UsageError(f"run: no such script {script!r}")
        argv = list(args.target)
        target = script
    flight: dict[str, Any] = {}
    if args.flight_recorder is not None:
        from ._options import OptionError
        from .flight import parse_dump_on

        if live is not None:
            raise UsageError("run: --live and --flight-recorder cannot be combined (the recorder keeps every record for its dumps)")

        try:
            dump_on = parse_dump_on(args.dump_on, "--dump-on") if args.dump_on else None
        except OptionError as exc:
            raise UsageError(str(exc)) from None
        templates = outputs or ["asynclens-dump-{n}.jsonl"]
        outputs = []
        sinks = [_dump_factory(t, _format_of(t, args.format), args.weight, args.full_stacks) for t in templates]
        flight = {"flight_recorder": args.flight_recorder, "dump_on": dump_on}
        flight.update({k: v for k, v in (("dump_interval", args.dump_interval), ("max_dumps", args.max_dumps)) if v is not None})
    elif args.dump_on or args.dump_interval is not None or args.max_dumps is not None:
        raise UsageError("run: --dump-on, --dump-interval and --max-dumps need --flight-recorder SECONDS")
    from ._options import OptionError

    try:
        session = Session(sinks, name=args.name, **_session_options(args), **flight)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    if live is not None:
        live.session = session

    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = argv
    if args.module is None:  # as `python script.py`: the script's directory first (for -m, the cwd already is)
        script_dir = os.path.dirname(os.path.abspath(target))
        if sys.path:
            sys.path[0] = script_dir
        else:
            sys.path.insert(0, script_dir)
    previous_term = None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        try:
            previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread
            previous_term = None
    code: int = 0
    interrupted: int | None = None
    try:
        session.start()
        try:
            if args.module is not None:
                runpy.run_module(args.module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
        finally:
            session.close()
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt as exc:
        if live is not None and live.quit_requested:  # q in the live view: a clean end
            code = 0
        else:
            _print_user_traceback(exc)
            interrupted = signal.SIGINT
    except _Signalled as exc:
        interrupted = exc.signum
    except BaseException as exc:  # noqa: BLE001 - the program's exception: report it as Python would
        if session.state == "new":  # start() refused: asynclens's own one-line error, not the program's
            print(f"asynclens: error: {exc}", file=sys.stderr)
            return 2
        _print_user_traceback(exc)
        if not _program_started(exc):
            print("asynclens: error: the program did not start (nothing was recorded)", file=sys.stderr, flush=True)
            args.no_summary = True
        code = 1
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        if previous_term is not None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not args.no_summary:
        print(session.summary(color=_use_color(args, sys.stderr)), file=sys.stderr, flush=True)
    disabled = session.statistics().sinks_disabled
    for path, sink in zip(outputs, sinks):  # the live sink, last, has no file
        if os.path.exists(path) and not (disabled and id(sink) in session._disabled):
            _status(args, f"wrote {path} ({_size(path)})")
        else:
            print(f"asynclens: error: could not write {path} (see the warning above)", file=sys.stderr)
    recorder = session.flight_recorder
    if recorder is not None:
        stats = recorder.statistics()
        for path in stats.files:
            _status(args, f"wrote {path} ({_size(path)})")
        if not stats.dumps_written and not stats.dump_failures:
            _status(args, "flight recorder: nothing triggered a dump")
        if stats.dump_failures:
            print(f"asynclens: error: {stats.dump_failures} dump file(s) could not be written (see the warnings above)", file=sys.stderr)
    if interrupted is not None:
        _die_by(interrupted)
        return 128 + int(interrupted)
    return code


def _module_exists(name: str) -> bool:
    """Whether ``name``'s top-level package can be found, without running any of its code."""
    import importlib.util

    top = name.split(".", 1)[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _program_started(exc: BaseException) -> bool:
    """False when ``exc`` came from finding or compiling the program (no such module, a
    syntax error in the script): raised before any line of the program ran."""
    if not isinstance(exc, (ImportError, SyntaxError)):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return any(not _internal(f.filename) and not f.filename.startswith("<frozen") for f in frames)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _die_by(signum: int) -> None:
    """End the process by ``signum`` (default action), as the program would have died."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        time.sleep(1)
    except (OSError, ValueError, AttributeError):
        pass


# -------------------------------------------------------------------- report


def load(paths: Sequence[str], args: argparse.Namespace | None = None) -> Any:
    """Read JSON lines traces (one run each, merged onto one timeline) into a RunData."""
    from .records import SessionInfo
    from .report.fileformat import iter_jsonl, partial_record_message
    from .report.rundata import RunData

    data = RunData()
    for path in paths:
        unknown: Counter[str] = Counter()
        part = None
        batch: list[Any] = []
        count = 0
        started = last = time.monotonic()

        def note(lineno: int, kind: str, unknown: Counter[str] = unknown) -> None:
            unknown[kind] += 1

        def partial(lineno: int, path: str = path) -> None:
            # a warning, not a status line: shown with -q too
            print(f"asynclens: warning: {partial_record_message(path, lineno)}", file=sys.stderr, flush=True)

        for _, record in iter_jsonl(path, on_unknown=note, on_partial=partial):
            if isinstance(record, SessionInfo):
                part = data.begin(record, path)
                continue
            batch.append(record)
            count += 1
            if len(batch) >= 20_000:
                data.add(batch, part)
                batch = []
                now = time.monotonic()
                if args is not None and now - last > 2:
                    last = now
                    _status(args, f"reading {path}: {count} records so far")
        data.add(batch, part)
        if args is not None:
            extra = ""
            if unknown:
                extra = "; skipped records of kinds this version does not know: " + ", ".join(
                    f"{k} ×{n}" for k, n in sorted(unknown.items())
                )
            took = time.monotonic() - started
            _status(args, f"read {path}: {count} records{f' in {took:.1f} s' if took > 1 else ''}{extra}")
    return data


def _report(args: argparse.Namespace) -> int:
    from .report.fileformat import TraceFileError

    outputs: list[str] = list(args.output or [])
    formats = [args.format or _format_of(path, None) for path in outputs] or [args.format or "text"]
    if "jsonl" in formats:
        raise UsageError("report: jsonl is the input format; choose text, html, chrome, speedscope or folded")
    _check_outputs(outputs)
    try:
        data = load(args.files, args)
    except TraceFileError as exc:
        print(f"asynclens: error: {exc}", file=sys.stderr)
        return 1
    if not outputs:
        color = formats[0] == "text" and _use_color(args, sys.stdout)
        text = render(data, formats[0], weight=args.weight, color=color, full_stacks=args.full_stacks)
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    from .sinks._rendering import write_text_atomically

    rendered: dict[str, str] = {}
    status = 0
    for path, fmt in zip(outputs, formats):
        started = time.monotonic()
        if fmt not in rendered:
            if data.count > 200_000:
                _status(args, f"rendering {data.count} records as {fmt}…")
            rendered[fmt] = render(data, fmt, weight=args.weight, full_stacks=args.full_stacks, width=_FILE_WIDTH)
        try:
            write_text_atomically(path, rendered[fmt])
        except OSError as exc:  # the other outputs are still written
            print(f"asynclens: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        took = time.monotonic() - started
        _status(args, f"wrote {path} ({fmt}, {_size(path)}{f', {took:.1f} s' if took > 1 else ''})")
    return status



# -------------------------------------------------------------------- attach


def _attach_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "live": getattr(args, "live_view", None) is not None,
        "session": _session_options(args),
        "name": args.name or f"attached to PID {args.pid}",
        "attached": {"by_pid": os.getpid(), "duration_s": args.duration},
    }


def _attach_paths(args: argparse.Namespace) -> tuple[list[str], list[str]] | None:
    if args.path is None:
        return None
    from .attach.attacher import import_paths

    return [os.path.abspath(args.path)], import_paths()[1]


def _attach(args: argparse.Namespace) -> int:
    """``attach PID``: record a running process for a while, then detach and write the outputs."""
    from .attach.attacher import AttachError, attach

    outputs = list(args.output or [])
    if args.format and not outputs:
        outputs = [f"asynclens-attach{FORMATS[args.format]}"]
    _check_outputs(outputs)
    formats = [_format_of(path, args.format) for path in outputs]
    live = getattr(args, "live_view", None)
    status = 0
    try:
        with attach(
            args.pid,
            _attach_options(args),
            connect_timeout=args.timeout,
            paths=_attach_paths(args),
            on_line=live.feed_line if live is not None else None,
        ) as attachment:
            when = time.strftime("%H:%M:%S UTC", time.gmtime(attachment.attached_wall_ns / 1e9))
            until = f"for {args.duration:g} s" if args.duration is not None else "until Ctrl-C"
            if live is None:
                _status(args, f"attached to PID {args.pid} at {when}; recording {until}")
                attachment.record(args.duration)
            else:
                live.run_attached(attachment, args.duration)
            data = load([attachment.trace_path]) if attachment.records else None
            for path, fmt in zip(outputs, formats):  # the trace goes with the private folder
                if fmt == "jsonl" and data is not None:
                    status = max(status, _copy_trace(attachment.trace_path, path, args))
    except AttachError as exc:
        print(f"asynclens: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # while attaching: the target's session ends by itself as the socket closed
        print(f"asynclens: error: interrupted while attaching to PID {args.pid}; nothing was written", file=sys.stderr)
        return 130
    if attachment.exited:
        print(
            f"asynclens: error: PID {args.pid} exited while attached; the outputs hold what was recorded until then",
            file=sys.stderr,
            flush=True,
        )
        status = 1
    elif attachment.detached:
        left = attachment.leftover
        if left.get("threads") or left.get("session_active"):
            print(f"asynclens: warning: after detaching, PID {args.pid} still has: {dict(left)}", file=sys.stderr)
        else:
            _status(args, f"detached from PID {args.pid}: every patch removed, no asynclens thread left")
    else:
        print(
            f"asynclens: error: the connection to PID {args.pid} broke before it confirmed the detach "
            "(its session ends by itself when it sees the connection closed)",
            file=sys.stderr,
            flush=True,
        )
        status = 1
    if data is None:
        print(f"asynclens: error: nothing was recorded from PID {args.pid}", file=sys.stderr)
        return 1
    if not args.no_summary:
        print(render(data, "text", color=_use_color(args, sys.stderr)), file=sys.stderr, end="", flush=True)
    from .sinks._rendering import write_text_atomically

    for path, fmt in zip(outputs, formats):
        if fmt == "jsonl":
            continue
        try:
            write_text_atomically(path, render(data, fmt, weight=args.weight, full_stacks=args.full_stacks, width=_FILE_WIDTH))
        except OSError as exc:
            print(f"asynclens: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        _status(args, f"wrote {path} ({_size(path)})")
    return status


def _top(args: argparse.Namespace) -> int:
    """``top PID``: the live view of a running process, attached until ``q`` (or Ctrl-C)."""
    from .live.attached import AttachedView

    args.live_view = AttachedView()
    return _attach(args)


def _copy_trace(source: str, path: str, args: argparse.Namespace) -> int:
    import shutil

    try:
        shutil.copyfile(source, path)
    except OSError as exc:
        print(f"asynclens: error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    _status(args, f"wrote {path} ({_size(path)})")
    return 0


def _pid(text: str) -> int:
    return _positive_int(text, f"not a process id: {text!r}", f"not a process id: {text!r}")


# ---------------------------------------------------------------------- demo


def _demo(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from ._demo import SERVICE

    checkout = os.path.join(os.path.dirname(_HERE), "examples", "service.py")
    if os.path.isfile(checkout):  # a source checkout: run the file as its README does
        return _run_demo(args, checkout)
    # The probes take frames in the asynclens folder for asynclens's own (they skip them
    # to find the program's blocking line): run a copy from outside the package.
    with tempfile.TemporaryDirectory(prefix="asynclens-demo-") as folder:
        copy = os.path.join(folder, "service.py")
        shutil.copyfile(SERVICE, copy)
        return _run_demo(args, copy)


def _run_demo(args: argparse.Namespace, example: str) -> int:
    run_args = _parser().parse_args(["run", "-o", args.output, example])
    run_args.quiet = args.quiet
    return _run(run_args)


# -------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m asynclens",
        description="See where an asyncio program's time goes.",
    )
    parser.add_argument("--version", action="version", version=f"asynclens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,report,attach,top,demo}", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a program under a session and write reports",
        description="Run a Python script or module under an asynclens session, write the chosen outputs "
        "and print the text summary to stderr.",
    )
    run.add_argument(
        "-o",
        "--output",
        action="append",
        metavar="FILE",
        help="write a report; the suffix picks the format "
        "(.html, .json/.trace.json: Chrome/Perfetto, .speedscope.json, .folded, .jsonl, .txt); repeatable",
    )
    run.add_argument("--format", choices=list(FORMATS), help="format of every -o file (default: from its suffix)")
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, like python -m (the last option)")
    run.add_argument("--name", help="a label for the run")
    run.add_argument("--weight", choices=["wall", "cpu"], default="wall", help="folded stacks weight (default: wall)")
    run.add_argument("--full-stacks", action="store_true", help=_FULL_STACKS_HELP)
    run.add_argument(
        "--stall-threshold",
        type=_duration,
        metavar="DURATION",
        help="report event-loop stalls longer than this (e.g. 50ms, 0.05s; a bare number is seconds)",
    )
    run.add_argument(
        "--flight-recorder",
        type=_duration,
        metavar="SECONDS",
        help="keep only the last SECONDS of records and write them (to each -o file, {n} numbering the dumps) "
        "when a --dump-on trigger fires (see docs/flight-recorder.md)",
    )
    run.add_argument(
        "--dump-on",
        action="append",
        metavar="TRIGGER",
        help="with --flight-recorder: stall=DURATION, task-exception or signal (SIGUSR2); repeatable "
        "(default: signal)",
    )
    run.add_argument(
        "--dump-interval",
        type=_duration,
        metavar="DURATION",
        help="with --flight-recorder: at most one dump per DURATION (default: 30s)",
    )
    run.add_argument("--max-dumps", type=_count, metavar="N", help="with --flight-recorder: at most N dumps (default: 10)")
    run.add_argument("--no-lag", action="store_true", help="turn the lag monitor off")
    run.add_argument("--no-handles", action="store_true", help="turn open-handle tracking off")
    run.add_argument("--no-scheduler", action="store_true", help="turn the scheduler probe off")
    run.add_argument("--no-summary", action="store_true", help="do not print the text summary")
    run.add_argument(
        "--live",
        action="store_true",
        help="show a live view on the terminal while the program runs (keys: s sort, p pause, q quit)",
    )
    run.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the summary (auto: when stderr is a terminal)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no status lines")
    run.add_argument("target", nargs="*", metavar="script.py [args ...]")
    run.set_defaults(func=_run)

    report = sub.add_parser(
        "report",
        help="convert recorded JSON lines runs",
        description="Convert one or more JSON lines traces (several processes merge into one timeline).",
    )
    report.add_argument("files", nargs="+", metavar="FILE.jsonl")
    report.add_argument(
        "--format", choices=[f for f in FORMATS if f != "jsonl"], help="output format (default: from -o, else text)"
    )
    report.add_argument(
        "-o",
        "--output",
        action="append",
        metavar="FILE",
        help="write a report; the suffix picks the format (as for run); repeatable (default: text on stdout)",
    )
    report.add_argument(
        "--weight", choices=["wall", "cpu"], default="wall", help="folded stacks weight (default: wall)"
    )
    report.add_argument("--full-stacks", action="store_true", help=_FULL_STACKS_HELP)
    report.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="colour the text report")
    report.add_argument("-q", "--quiet", action="store_true", help="no status lines")
    report.set_defaults(func=_report)

    attach = sub.add_parser(
        "attach",
        help="record a running Python 3.14+ process for a while (sys.remote_exec)",
        description="Attach to a running Python 3.14+ process, record it for --duration seconds or until "
        "Ctrl-C, detach (leaving it as it was), write the outputs and print the text summary to stderr.",
    )
    _attach_arguments(attach)
    attach.add_argument("--duration", type=_duration, metavar="DURATION", help="record this long (default: until Ctrl-C)")
    attach.add_argument(
        "-o",
        "--output",
        action="append",
        metavar="FILE",
        help="write a report; the suffix picks the format (as for run); repeatable",
    )
    attach.add_argument("--format", choices=list(FORMATS), help="format of every -o file (default: from its suffix)")
    attach.add_argument("--weight", choices=["wall", "cpu"], default="wall", help="folded stacks weight (default: wall)")
    attach.add_argument("--full-stacks", action="store_true", help=_FULL_STACKS_HELP)
    attach.add_argument("--no-summary", action="store_true", help="do not print the text summary")
    attach.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="colour the summary (auto: on a terminal)"
    )
    attach.add_argument("-q", "--quiet", action="store_true", help="no status lines")
    attach.set_defaults(func=_attach)

    top = sub.add_parser(
        "top",
        help="a live view of a running Python 3.14+ process (attached until q)",
        description="Attach to a running Python 3.14+ process and show its loops' lag and utilisation, "
        "stalls, the busiest tasks and spans, open handles and executors, refreshed every second "
        "(keys: s sort, p pause, q quit and detach). When stdout is not a terminal, a plain summary "
        "is printed every second instead.",
    )
    _attach_arguments(top)
    top.add_argument("--duration", type=_duration, metavar="DURATION", help="detach after this long (default: at q)")
    top.add_argument("-o", "--output", action="append", metavar="FILE", help="also write a report (as for attach)")
    top.add_argument("--format", choices=list(FORMATS), help="format of every -o file (default: from its suffix)")
    top.add_argument("--weight", choices=["wall", "cpu"], default="wall", help=argparse.SUPPRESS)
    top.add_argument("--full-stacks", action="store_true", help=argparse.SUPPRESS)
    top.add_argument("--summary", dest="no_summary", action="store_false", help="print the text summary at the end")
    top.add_argument("--color", choices=["auto", "always", "never"], default="auto", help=argparse.SUPPRESS)
    top.add_argument("-q", "--quiet", action="store_true", help="no status lines")
    top.set_defaults(func=_top, no_summary=True)

    demo = sub.add_parser("demo", help="run the example service (shipped with asynclens) and write an HTML report")
    demo.add_argument("-o", "--output", default="asynclens-demo.html", metavar="FILE")
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(func=_demo)
    return parser


def _attach_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``attach`` and ``top`` share: the target and its session."""
    parser.add_argument("pid", type=_pid, metavar="PID", help="the process to attach to")
    parser.add_argument("--name", help="a label for the run (default: attached to PID ...)")
    parser.add_argument(
        "--stall-threshold",
        type=_duration,
        metavar="DURATION",
        help="report event-loop stalls longer than this (e.g. 50ms, 0.05s; a bare number is seconds)",
    )
    parser.add_argument("--no-lag", action="store_true", help="turn the lag monitor off")
    parser.add_argument("--no-handles", action="store_true", help="turn open-handle tracking off")
    parser.add_argument("--no-scheduler", action="store_true", help="turn the scheduler probe off")
    parser.add_argument(
        "--path",
        metavar="DIR",
        help="the folder the target imports asynclens from (default: the one this asynclens was imported from)",
    )
    parser.add_argument(
        "--timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="how long the target may take to run the attach script (default: 10s)",
    )


_RUN_VALUE_OPTIONS = {
    "-o",
    "--output",
    "--format",
    "--name",
    "--weight",
    "--stall-threshold",
    "--color",
    "--flight-recorder",
    "--dump-on",
    "--dump-interval",
    "--max-dumps",
}


def _split_run(argv: list[str]) -> tuple[list[str], tuple[str | None, list[str]] | None]:
    """Split ``run [options] (script | -m module) [program args]``: everything after the
    script or module belongs to the program, options included (as ``python`` does)."""
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return argv[:i], (None, argv[i + 1 :])
        if token == "-m" or (token.startswith("-m") and not token.startswith("--")):
            module = token[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            rest = argv[i + (1 if token[2:] else 2) :]
            if not module:
                raise UsageError("run: -m needs a module name")
            return argv[:i], (module, rest)
        if not token.startswith("-") or token == "-":
            return argv[:i], (None, argv[i:])
        if token in _RUN_VALUE_OPTIONS:
            i += 2
        else:
            i += 1
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m asynclens``; returns the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        program: tuple[str | None, list[str]] | None = None
        if argv and argv[0] == "run":
            argv, program = _split_run(argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if program is not None:
            args.module, args.target = program
        return int(args.func(args))
    except UsageError as exc:
        print(f"asynclens: error: {exc}", file=sys.stderr)
        return 2
