"""The script's faulthandler watchdog, paused over dsprof's end-of-run work (script_watchdog.py),
on the real faulthandler: dumps go to a file, and each test leaves nothing armed."""

from __future__ import annotations

import faulthandler
import time

import pytest

from dsprof import script_watchdog


@pytest.fixture
def dumps(tmp_path):
    with open(tmp_path / "dumps.txt", "w+") as fh:
        script_watchdog.track()
        try:
            yield fh
        finally:
            script_watchdog.pause()
            script_watchdog._paused[0] = None
            script_watchdog.CANCEL()


def _dumped(fh) -> int:
    fh.seek(0)
    return fh.read().count("Timeout (")


def test_a_paused_watchdog_keeps_the_time_it_had_left(dumps):
    # GIVEN the script armed a one-shot watchdog of 0.4 s, and its code returned at once
    faulthandler.dump_traceback_later(0.4, file=dumps)
    script_watchdog.pause()
    # THEN faulthandler's own functions are back, and nothing fires while dsprof works
    assert faulthandler.dump_traceback_later is script_watchdog.ARM
    assert faulthandler.cancel_dump_traceback_later is script_watchdog.CANCEL
    time.sleep(0.8)
    assert _dumped(dumps) == 0
    # WHEN it is armed again before the script's atexit handlers THEN it fires once its time
    # left has passed, not at once
    script_watchdog.resume()
    time.sleep(0.1)
    assert _dumped(dumps) == 0
    deadline = time.monotonic() + 5
    while _dumped(dumps) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dumped(dumps) == 1


def test_a_one_shot_watchdog_that_fired_during_the_script_is_not_armed_again(dumps):
    faulthandler.dump_traceback_later(0.05, file=dumps)
    deadline = time.monotonic() + 5
    while _dumped(dumps) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    script_watchdog.pause()
    script_watchdog.resume()
    time.sleep(0.3)
    assert _dumped(dumps) == 1


def test_a_watchdog_the_script_cancelled_stays_cancelled(dumps):
    faulthandler.dump_traceback_later(0.1, file=dumps)
    faulthandler.cancel_dump_traceback_later()
    script_watchdog.pause()
    script_watchdog.resume()
    time.sleep(0.3)
    assert _dumped(dumps) == 0
