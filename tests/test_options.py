"""session()'s options: unknown keywords, output paths checked at start, sinks by suffix."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

import asynclens
from asynclens._options import OptionError, UnknownOptionError
from asynclens.sinks import HtmlSink, Sink, TextSink, sink_for

NO_PROBES: dict[str, Any] = dict(lag=False, track_handles=False, scheduler=False)


def test_an_unknown_option_lists_the_valid_ones_in_one_line() -> None:
    with pytest.raises(TypeError) as info:  # still a TypeError, as Python's own would be
        asynclens.session(bogus=1)
    assert isinstance(info.value, UnknownOptionError)
    message = str(info.value)
    assert message.startswith("asynclens.session(): unknown option 'bogus'; valid options: sinks, clock, ")
    assert "stall_threshold" in message and "did you mean" not in message  # nothing is close to 'bogus'
    assert "\n" not in message


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("stall_treshold", "stall_threshold"),
        ("sink", "sinks"),
        ("threshold", "stall_threshold"),
        ("lagInterval", "lag_interval"),
    ],
)
def test_an_unknown_option_suggests_the_closest(typo: str, meant: str) -> None:
    with pytest.raises(
        UnknownOptionError, match=rf"unknown option '{typo}' \(did you mean '{meant}'\?\); valid options: "
    ):
        asynclens.session(**{typo: 1})


def test_the_session_class_checks_its_options_too() -> None:
    with pytest.raises(UnknownOptionError, match="unknown option 'scheduller' \\(did you mean 'scheduler'"):
        asynclens.Session(scheduller=False)
    with pytest.raises(UnknownOptionError, match="takes 1 positional argument"):
        asynclens.Session([], None)  # type: ignore[misc]


def test_a_missing_output_directory_is_refused_when_the_session_starts(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.html"
    session = asynclens.session(sinks=[str(target)], **NO_PROBES)
    with pytest.raises(OptionError) as info:
        session.start()
    assert str(info.value) == (
        f"asynclens.session(): cannot write {str(target)!r}: no such directory {str(target.parent)!r}"
    )
    assert session.state == "new" and asynclens.current_session() is None  # nothing started
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_sink_objects_of_asynclens_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="it is a directory"):
        with asynclens.session(sinks=[HtmlSink(str(tmp_path))], **NO_PROBES):
            pass


def test_the_users_own_sinks_are_left_to_them(tmp_path: Path) -> None:
    class Mine(Sink):
        path = "/no/such/dir/not-a-file-name"

    with asynclens.session(sinks=[Mine()], **NO_PROBES) as session:
        pass
    assert session.state == "closed"


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OptionError, match="is not writable"):
            asynclens.session(sinks=[str(folder / "run.jsonl")], **NO_PROBES).start()
    finally:
        folder.chmod(0o700)


def test_a_txt_sink_writes_the_text_summary(tmp_path: Path) -> None:
    path = tmp_path / "summary.txt"
    assert isinstance(sink_for(str(path)), TextSink)
    with asynclens.session(sinks=[str(path)], **NO_PROBES):
        with asynclens.span("checkout"):
            pass
    text = path.read_text()
    assert text.startswith("asynclens: 1 spans in ") and "checkout" in text


def test_an_unknown_sink_name_is_one_line() -> None:
    with pytest.raises(ValueError) as info:
        asynclens.session(sinks=["report.pdf"])
    message = str(info.value)
    assert message.startswith("unknown sink 'report.pdf': a path must end in one of ") and ".txt" in message
    assert "\n" not in message
