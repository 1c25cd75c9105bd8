"""Every numeric option has a documented range; NaN, infinities and out-of-range values are one-line errors.

The named cases run the command lines as real processes (exit status and standard error as an
operator sees them); the sweep introspects both click groups, so an option added later without a
range fails here, and runs in process (fast).
"""
from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from conftest import run_cli

from netsense.aggregator.cli import main as aggregator_main
from netsense.collector import cli as collector_cli
from netsense.collector.cli import main as collector_main
from netsense.collector.sources import open_source
from netsense.collector.synthetic import SyntheticSpec
from netsense.errors import ConfigError

BAD = ("nan", "inf", "-inf", "1e300")
# import-graphchallenge --start: ISO 8601 or epoch seconds, a number too.
TIME_TYPES = tuple(t for t in [getattr(collector_cli, "UtcTime", None)] if t is not None)


def assert_one_line_error(r, *, usage: bool, mentions: str = ""):
    """Exit 2 with click's usage error (one ``Error:`` line), or exit 1 with exactly one line."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    if usage:
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    else:
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert len(lines) == 1 and lines == errors, r.stderr
    assert mentions in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------- named cases, real processes

def collector_run(shared, *extra, source="synthetic:seed=1,packets=10"):
    return run_cli("collector", "run", "--shared", str(shared), "--node", "n1", "--source", source, *extra,
                   timeout=120)


@pytest.mark.parametrize("option, value, range_text", [
    ("--window-seconds", "99999999999999", "1<=x<=604800"),
    ("--window-seconds", "inf", "1<=x<=604800"),
    ("--window-packets", "1e300", "1<=x<=1073741824"),
    ("--status-interval", "nan", "0.1<=x<=3600"),
    ("--spool-bytes", "-inf", "0<=x<=1099511627776"),
])
def test_collector_numeric_options_are_usage_errors(tmp_path, option, value, range_text):
    r = collector_run(tmp_path / "s", option, value)
    line = assert_one_line_error(r, usage=True, mentions=option)
    assert range_text in line  # the message says what to give instead
    assert not (tmp_path / "s").exists()  # refused before anything is written


@pytest.mark.parametrize("option, value, range_text", [
    ("--period-seconds", "1e20", "1<=x<=604800"),
    ("--period-seconds", "99999999999999", "1<=x<=604800"),
    ("--rescan-seconds", "nan", "0.05<=x<=3600"),
    ("--checkpoint-seconds", "inf", "0<=x<=86400"),
    ("--retain-days", "nan", "0<=x<=36500"),
])
def test_aggregator_numeric_options_are_usage_errors(tmp_path, option, value, range_text):
    r = run_cli("aggregator", "run", "--shared", str(tmp_path / "s"), "--once", option, value, timeout=120)
    line = assert_one_line_error(r, usage=True, mentions=option)
    assert range_text in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("wing", ["collector", "aggregator"])
def test_shared_on_proc_is_one_line(wing):
    if wing == "collector":
        r = collector_run("/proc")
    else:
        r = run_cli("aggregator", "run", "--shared", "/proc", "--once", timeout=120)
    line = assert_one_line_error(r, usage=False, mentions="not a usable shared directory")
    assert "/proc" in line


@pytest.mark.parametrize("source, key", [
    ("synthetic:hosts=1e12", "hosts"),
    ("synthetic:packets=nan", "packets"),
    ("synthetic:rate=inf", "rate"),
    ("synthetic:alpha=1", "alpha"),
    ("synthetic:pace=-1", "pace"),
])
def test_source_spec_numbers_are_one_line(tmp_path, source, key):
    r = collector_run(tmp_path / "s", source=source)
    line = assert_one_line_error(r, usage=False, mentions=key)
    assert "range" in line


def test_follow_settle_is_one_line(tmp_path):
    r = collector_run(tmp_path / "s", source=f"pcap:{tmp_path}?follow=1,settle=inf")
    assert_one_line_error(r, usage=False, mentions="settle")


def test_import_start_is_a_usage_error(tmp_path):
    tar = tmp_path / "x.tar"
    tar.write_bytes(b"")
    r = run_cli("collector", "import-graphchallenge", str(tar), "--shared", str(tmp_path / "s"), "--node", "gc",
                "--start", "99999999999999", timeout=120)
    assert_one_line_error(r, usage=True, mentions="--start")


# --------------------------------------------------------------------------- the sweep, in process

def numeric_options():
    """(group name, group, command name, option) for every numeric option of both command lines."""
    out = []
    for gname, group in (("collector", collector_main), ("aggregator", aggregator_main)):
        for cname, cmd in group.commands.items():
            for p in cmd.params:
                if not isinstance(p, click.Option) or p.count or p.is_flag:
                    continue
                if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType, *TIME_TYPES)):
                    out.append((gname, group, cname, p))
    return out


OPTIONS = numeric_options()


def test_the_sweep_finds_the_options():
    names = {(g, c, p.opts[0]) for g, _, c, p in OPTIONS}
    assert ("collector", "run", "--window-seconds") in names
    assert ("aggregator", "run", "--period-seconds") in names
    assert ("collector", "import-graphchallenge", "--start") in names
    assert len(names) >= 20


@pytest.mark.parametrize("gname, group, cname, opt", OPTIONS,
                         ids=[f"{g}-{c}-{p.opts[0]}" for g, _, c, p in OPTIONS])
def test_every_numeric_option_has_a_range_and_refuses_non_finite(gname, group, cname, opt):
    ctx = click.Context(group.commands[cname], info_name=cname)
    help_text = " ".join(opt.get_help_record(ctx) or ())
    if not isinstance(opt.type, TIME_TYPES):
        assert opt.type.min is not None and opt.type.max is not None, f"{opt.opts[0]} has no upper/lower bound"
    assert "<=x<=" in help_text or "<x<=" in help_text, help_text  # the range is in --help
    for value in BAD:
        # The bad option first: click processes options in command-line order, so it is refused
        # before anything else is looked at (and no daemon can start if it were accepted).
        r = CliRunner().invoke(group, [cname, opt.opts[0], value])
        assert r.exit_code == 2, (opt.opts[0], value, r.exit_code, r.output)
        assert isinstance(r.exception, SystemExit), r.exception
        assert f"Invalid value for '{opt.opts[0]}'" in r.output, r.output
        assert "Traceback" not in r.output


SYNTHETIC_NUMBERS = [f.name for f in dataclasses.fields(SyntheticSpec) if f.name != "realtime"]


@pytest.mark.parametrize("key", SYNTHETIC_NUMBERS)
@pytest.mark.parametrize("value", BAD + ("-1",))
def test_every_synthetic_number_refuses_non_finite(key, value):
    with pytest.raises(ConfigError) as e:
        open_source(f"synthetic:{key}={value}", node="n1", windowing=(1 << 17, 60))
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value", BAD + ("-1",))
def test_follow_settle_refuses_non_finite(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        open_source(f"pcap:{tmp_path}?follow=1,settle={value}", node="n1", windowing=(1 << 17, 60))
    assert "settle" in str(e.value) and "\n" not in str(e.value)


def test_in_range_values_still_work():
    from netsense.collector.cli import UtcTime

    s = SyntheticSpec.parse("seed=18446744073709551615,packets=1e6,rate=2.5e4,hosts=16777216,alpha=1.01,pace=0")
    assert (s.seed, s.packets, s.rate, s.hosts) == (2**64 - 1, 1_000_000, 25_000.0, 1 << 24)
    spool = next(p for p in collector_main.commands["run"].params if p.name == "spool_bytes")
    assert spool.type.convert("1e9", spool, None) == 10**9
    assert UtcTime().convert("2026-01-01T00:00:00Z", None, None) == 1_767_225_600
    assert UtcTime().convert("2026-01-01T00:00:00", None, None) == 1_767_225_600  # no zone: UTC
