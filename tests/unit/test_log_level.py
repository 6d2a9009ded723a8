"""DS_LOG_LEVEL: a bad value is reported once, then INFO is used."""

from __future__ import annotations

import io
import logging
import sys

from dsprof import log


def test_bad_level_is_reported_once_and_info_is_used(monkeypatch):
    # GIVEN a bad DS_LOG_LEVEL and a fresh "complained" state
    monkeypatch.setenv("DS_LOG_LEVEL", "chatty")
    monkeypatch.delattr(log.configure, "_complained", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    old = log.logger.level
    try:
        # WHEN logging is configured twice (dsprof run, then dsprof.profile())
        levels = [log.configure(), log.configure()]
    finally:
        log.logger.setLevel(old)
        log.configure.__dict__.pop("_complained", None)
        handler = log._handler("stderr")
        if handler is not None:
            handler.setStream(sys.__stderr__)
    # THEN INFO is in force and the complaint was printed once
    assert levels == [logging.INFO, logging.INFO]
    assert err.getvalue().count("DS_LOG_LEVEL='chatty' is not a level") == 1


def test_numeric_and_lower_case_levels(monkeypatch):
    old = log.logger.level
    try:
        monkeypatch.setenv("DS_LOG_LEVEL", "warning")
        assert log.configure() == logging.WARNING
        monkeypatch.setenv("DS_LOG_LEVEL", "10")
        assert log.configure() == logging.DEBUG and log.logger.isEnabledFor(logging.DEBUG)
    finally:
        log.logger.setLevel(old)


def test_step_lines_reach_the_terminal_only_at_debug_or_on_request(monkeypatch):
    old = log.logger.level
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    try:
        shown = []
        for level, flag in (("INFO", None), ("INFO", "1"), ("DEBUG", None)):
            monkeypatch.setenv("DS_LOG_LEVEL", level)
            if flag:
                monkeypatch.setenv("DSPROF_STEP_LINES", flag)
            else:
                monkeypatch.delenv("DSPROF_STEP_LINES", raising=False)
            log.configure()
            err.seek(0)
            err.truncate()
            log.logger.info("step 7: 1.0 ms", extra=log.STEP_LINE)
            log.logger.info("other line")
            shown.append(("step 7" in err.getvalue(), "other line" in err.getvalue()))
    finally:
        log.logger.setLevel(old)
        handler = log._handler("stderr")
        if handler is not None:
            handler.setStream(sys.__stderr__)
    assert shown == [(False, True), (True, True), (True, True)]
