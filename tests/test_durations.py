"""One rule for durations: units and timedelta mean the same everywhere; a bare number is
seconds in session() and the CLI, milliseconds in the pytest options."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import asynclens
from asynclens._durations import DurationError, parse_duration, parse_seconds
from asynclens.cli import main

NO_PROBES: dict[str, Any] = dict(lag=False, track_handles=False, scheduler=False)
MS = 1_000_000


@pytest.mark.parametrize(
    ("value", "ns"),
    [("50ms", 50 * MS), ("0.05s", 50 * MS), ("50000us", 50 * MS), (timedelta(milliseconds=50), 50 * MS)],
)
def test_a_unit_means_the_same_for_every_bare_unit(value: object, ns: int) -> None:
    assert parse_duration(value, "x") == parse_duration(value, "x", bare="s") == ns


def test_a_bare_number_takes_the_places_unit() -> None:
    assert parse_duration(50, "x") == parse_duration("50", "x") == 50 * MS
    assert parse_duration(0.05, "x", bare="s") == parse_duration("0.05", "x", bare="s") == 50 * MS
    assert parse_seconds(2, "x") == 2.0 and parse_seconds("250ms", "x") == 0.25


def test_the_hint_names_the_bare_unit_of_the_place() -> None:
    with pytest.raises(DurationError, match="a bare number of seconds"):
        parse_seconds("fast", "stall_threshold")
    with pytest.raises(DurationError, match="a bare number of milliseconds"):
        parse_duration("fast", "--asynclens-max-stall")


@pytest.mark.parametrize(
    ("option", "value", "seconds"),
    [
        ("stall_threshold", "50ms", 0.05),
        ("stall_threshold", 0.2, 0.2),  # a number stays seconds (as before)
        ("stall_threshold", "0.2", 0.2),
        ("lag_interval", timedelta(milliseconds=5), 0.005),
        ("flush_interval", "250 ms", 0.25),
    ],
)
def test_session_duration_options_accept_every_form(option: str, value: object, seconds: float) -> None:
    session = asynclens.session(**{option: value}, **NO_PROBES)
    assert getattr(session, option) == pytest.approx(seconds)
    assert session.options[option] == pytest.approx(seconds)  # the header records seconds


def test_the_lag_probe_gets_the_parsed_threshold() -> None:
    session = asynclens.session(stall_threshold="80ms", lag_interval="2ms", track_handles=False, scheduler=False)
    lag = session.probe("lag")
    assert lag.threshold_ns == 80 * MS and lag.interval_ns == 2 * MS


@pytest.mark.parametrize("value", ["50xs", "fast", "-5ms", True, None, [1]])
def test_session_refuses_a_bad_duration_in_one_line(value: object) -> None:
    with pytest.raises(ValueError) as info:
        asynclens.session(stall_threshold=value, **NO_PROBES)
    message = str(info.value)
    assert message.startswith("asynclens.session(stall_threshold=...): ") and "\n" not in message


def test_cli_stall_threshold_takes_a_unit(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "prog.py"
    script.write_text("import asynclens\nprint('threshold', asynclens.current_session().stall_threshold)\n")
    assert main(["run", "-q", "--no-summary", "--stall-threshold", "120ms", str(script)]) == 0
    assert capsys.readouterr().out == "threshold 0.12\n"
    assert main(["run", "-q", "--no-summary", "--stall-threshold", "0.3", str(script)]) == 0
    assert capsys.readouterr().out == "threshold 0.3\n"


def test_cli_refuses_a_bad_duration_in_one_line(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "prog.py").write_text("")
    assert main(["run", "--stall-threshold", "50 parsecs", str(tmp_path / "prog.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asynclens: error: argument --stall-threshold: '50 parsecs' has an unknown unit 'parsecs'")
    assert len(err.strip().splitlines()) == 1
