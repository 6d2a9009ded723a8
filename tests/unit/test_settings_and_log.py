"""Settings precedence (defaults < environment < flags) and DS_LOG_LEVEL parsing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dsprof.errors import ConfigError
from dsprof.log import parse_level
from dsprof.settings import Settings


def test_defaults():
    s = Settings.load(env={})
    assert (s.wait, s.warmup, s.active, s.repeat) == (5, 1, 3, 1)
    assert s.output is None and s.runs_dir == Path("dsprof-runs")
    assert s.analyze and not s.quiet and not s.with_stack


def test_environment_overrides_defaults_and_flags_override_environment():
    env = {"DSPROF_WAIT": "2", "DSPROF_ACTIVE": "4", "DSPROF_ANALYZE": "0",
           "DSPROF_OUTPUT": "/tmp/x", "DSPROF_QUIET": "yes"}
    s = Settings.load(env=env, active=7)
    assert s.wait == 2 and s.active == 7 and not s.analyze and s.quiet
    assert s.output == Path("/tmp/x")


def test_every_setting_has_an_env_twin():
    names = Settings.env_names()
    assert all(v.startswith("DSPROF_") for v in names.values())
    assert len(set(names.values())) == len(names)


@pytest.mark.parametrize("env", [{"DSPROF_WAIT": "-1"}, {"DSPROF_ACTIVE": "0"},
                                 {"DSPROF_ANALYZE": "maybe"}, {"DSPROF_MAX_CAPTURE_S": "x"}])
def test_bad_environment_values_name_the_variable(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.load(env=env)


def test_bad_flag_values_are_rejected():
    with pytest.raises(ConfigError):
        Settings.load(env={}, active=0)


@pytest.mark.parametrize("text, level", [("DEBUG", logging.DEBUG), ("debug", logging.DEBUG),
                                         ("Warning", logging.WARNING), ("ERROR", logging.ERROR),
                                         ("10", 10), (None, logging.INFO), ("", logging.INFO)])
def test_log_levels(text, level):
    assert parse_level(text) == (level, None)


def test_bad_log_level_falls_back_to_info_with_a_complaint():
    level, complaint = parse_level("LOUD")
    assert level == logging.INFO and "LOUD" in complaint
